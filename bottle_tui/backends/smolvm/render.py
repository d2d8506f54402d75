"""Pure renderers from a BottlePlan to what a microVM bottle needs: the sidecar bundle's compose
spec, the pack-time Smolfile and the create-time flags of ``smolvm machine create --from``.

The pack is built once per agent image, so the Smolfile holds only what is the same for every
bottle of that image (entrypoint, workdir, the CA and quiet-claude variables; the user is the
image's own, and every exec names it); everything
per bottle (resources, the proxy address, placeholders, the allow-list, the CA mount) is a
create-time flag. ``--from`` never goes with ``--smolfile`` (smolvm refuses the pair).

The guest has no resolver for the bundle's compose names, so the proxy is an IP literal, the
allow-list names only that address, and the guest's DNS server is that address too (nothing
answers DNS there, so names cannot leak through lookups).
"""

from __future__ import annotations

import ipaddress
import json
import math
from typing import Any

from bottle_contract import ports

from ...errors import BottleError
from ...plan import CA_ENV_VARS, CA_MOUNT, WORKDIR, BottlePlan
from ...state import project_name
from ..docker.compose import bottle_labels, render_compose

PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")
# The same for every bottle of one agent image: these go into the cached pack.
PACK_ENV_VARS = (
    *CA_ENV_VARS,
    "NO_PROXY",
    "no_proxy",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC",
    "DISABLE_AUTOUPDATER",
)
ENTRYPOINT = ("sleep", "infinity")
BUNDLE_NETWORK = "egress"


def vm_name(slug: str) -> str:
    """Machines share the compose projects' prefix, so discovery and cleanup know them by name."""
    return project_name(slug)


def bundle_address(text: str) -> str:
    """The bundle's IPv4 address as a literal, or an error: a name would need a resolver the guest lacks."""
    try:
        address = ipaddress.IPv4Address(text.strip())
    except ValueError:
        raise BottleError(
            f"the sidecar bundle has no IPv4 address on its '{BUNDLE_NETWORK}' network (got '{text.strip()}'): see the bottle's bringup.log"
        ) from None
    return str(address)


def proxy_url(address: str) -> str:
    return f"http://{bundle_address(address)}:{ports.EGRESS}"


def vm_env(plan: BottlePlan, address: str) -> dict[str, str]:
    """The agent's environment inside the VM: the docker agent's, with the proxy by IP literal."""
    env = dict(plan.agent_env)
    env.update({var: proxy_url(address) for var in PROXY_VARS})
    return env


def render_bundle(plan: BottlePlan, *, host_uid: int, host_gid: int) -> dict[str, Any]:
    """The bundle alone, as for a docker bottle, on one normal bridge the host routes to (the VM's
    traffic leaves through the host, and its allow-list names the bundle's address there)."""
    spec = render_compose(plan, host_uid=host_uid, host_gid=host_gid)
    sidecars = spec["services"]["sidecars"]
    sidecars["networks"] = {BUNDLE_NETWORK: {}}
    return {
        "name": spec["name"],
        "services": {"sidecars": sidecars},
        "networks": {BUNDLE_NETWORK: spec["networks"][BUNDLE_NETWORK]},
    }


def _toml_value(value: Any) -> str:
    # JSON strings are valid TOML basic strings (same escapes), and so are lists of them.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(value)


def pack_env(plan: BottlePlan) -> dict[str, str]:
    env = plan.agent_env
    return {var: env[var] for var in PACK_ENV_VARS if var in env}


def render_smolfile(plan: BottlePlan) -> str:
    """The pack-time Smolfile (TOML). Every key is one smolvm knows: it refuses unknown ones."""
    doc: dict[str, Any] = {
        "entrypoint": list(ENTRYPOINT),
        "workdir": WORKDIR,
        "env": [f"{k}={v}" for k, v in pack_env(plan).items()],
    }
    lines = ["# Rendered by bottle-tui for the agent pack; per-bottle settings are create-time flags."]
    lines += [f"{key} = {_toml_value(value)}" for key, value in doc.items()]
    return "\n".join(lines) + "\n"


def machine_labels(plan: BottlePlan) -> dict[str, str]:
    """The same labels a docker bottle's containers carry, so both are discovered alike."""
    return bottle_labels(plan)


def create_flags(plan: BottlePlan, *, address: str) -> list[str]:
    """Flags of `machine create --from PACK` for this bottle; ``address`` is the bundle's IP."""
    ip = bundle_address(address)
    res = plan.bottle.resources
    flags = [
        "--cpus",
        str(max(1, math.ceil(res.cpus))),
        "--mem",
        str(res.memory_mib),
        "--net",
        # Only the bundle: the allow-list is the VM's whole way out.
        "--allow-cidr",
        f"{ip}/32",
        "--dns",
        ip,
        "--volume",
        f"{plan.state.ca}:{CA_MOUNT}:ro",
    ]
    packed = pack_env(plan)
    for key, value in sorted(vm_env(plan, ip).items()):
        if packed.get(key) != value:
            flags += ["--env", f"{key}={value}"]
    return flags
