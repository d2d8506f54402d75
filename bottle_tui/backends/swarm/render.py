"""Pure renderers from a BottlePlan to a swarm bottle: the `docker service create` arguments of its
two services, its two overlay networks and its secrets.

The services are the docker bottle's (``render_compose``): the same images, user, command, init,
environment, labels, limits and hardening, translated key by key, so a fact of the docker bottle
is written once. What differs is where the state lives: the bundle's sidecar folders are one
volume of its own on its node (``/state``), seeded by the host through the engine (the bundle's
control command), and the agent's CA certificate is a Docker config. The agent sits on an
``--internal`` overlay only (no gateway, nothing published, so no routing mesh); the bundle is on
it under the agent's aliases and on a second overlay, its way out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bottle_contract import layout

from ...plan import AGENT_HOME, CA_CERT_NAME, CA_MOUNT, BottlePlan
from ...state import project_name
from ..docker import labels
from ..docker.compose import render_compose
from ..docker.engine import container_name
from ..docker.workspace import volume_name

# The swarm bundle's user: its state is a volume on another machine, not the operator's folder,
# so it is a fixed uid, the owner of /state in the sidecars image (a fresh volume takes it).
BUNDLE_UID = 1001
NODE_LABEL = "dev.bottle-tui.node"  # the hostname of the node a bottle is pinned to
SEED_MARK = f"{layout.BUNDLE_STATE}/{layout.SEEDED}"
# The egress venv's python: it has pyyaml, which the contract's policy check needs.
CONTROL = ["/opt/egress/bin/python", "/opt/bottle/control/bottle_control.py"]
# Compose keys of a service and what becomes of them on swarm. Every key render_compose writes
# is in one of these sets (a test checks), so a new fact of the docker bottle is never dropped
# unseen.
TRANSLATED = frozenset(
    {
        "image",
        "init",
        "command",
        "user",
        "working_dir",
        "hostname",
        "environment",
        "labels",
        "cpus",
        "mem_limit",
        "pids_limit",
        "stop_grace_period",
        "cap_drop",
        "read_only",
        "tmpfs",
        "logging",
    }
)
# Handled by the swarm renderer itself: the task's name is the swarm's, networks and mounts are
# the swarm bottle's own. Swarm services (API 1.41, engine 20.10) have no security options, so
# no-new-privileges cannot be set; with every capability dropped, a setuid binary still gains none.
REPLACED = frozenset({"container_name", "networks", "volumes", "security_opt"})


def service_name(slug: str, service: str) -> str:
    """``claude-bottle-<slug>-agent`` / ``-sidecars``: the docker bottle's container names."""
    return container_name(project_name(slug), service)


def network_name(slug: str, which: str) -> str:
    return service_name(slug, which)


def state_volume(slug: str) -> str:
    """The bundle's state (policy, queue, decisions log, status) on its node."""
    return f"bottle-tui-state-{slug}"


def secret_name(slug: str, env_name: str) -> str:
    return service_name(slug, f"secret-{env_name}")


def ca_config_name(slug: str) -> str:
    return service_name(slug, "ca")


@dataclass(frozen=True)
class SwarmBottle:
    """Everything one swarm bottle is, as argv tails for the manager's CLI (after ``docker --context M``)."""

    networks: list[list[str]]
    secrets: dict[str, str]  # secret name -> the env var whose value it holds
    ca_config: str
    bundle: list[str]
    agent: list[str]
    names: dict[str, str] = field(default_factory=dict)  # role -> object name (services, networks, volumes)


def _flags(service: dict[str, Any]) -> list[str]:
    """The `docker service create` flags of a compose service's keys in TRANSLATED."""
    unknown = set(service) - TRANSLATED - REPLACED
    if unknown:
        raise ValueError(f"compose keys the swarm renderer does not know: {sorted(unknown)}")
    flags: list[str] = []
    if service.get("init"):
        flags.append("--init")
    if "user" in service:
        flags += ["--user", str(service["user"])]
    if "working_dir" in service:
        flags += ["--workdir", str(service["working_dir"])]
    if "hostname" in service:
        flags += ["--hostname", str(service["hostname"])]
    for name, value in service.get("environment", {}).items():
        if value is not None:  # None: a credential, which a swarm bottle gives as a secret
            flags += ["--env", f"{name}={value}"]
    for name, value in service.get("labels", {}).items():
        flags += ["--label", f"{name}={value}", "--container-label", f"{name}={value}"]
    if "cpus" in service:
        flags += ["--limit-cpu", f"{service['cpus']:g}"]
    if "mem_limit" in service:
        flags += ["--limit-memory", str(service["mem_limit"])]
    if "pids_limit" in service:
        flags += ["--limit-pids", str(service["pids_limit"])]
    if "stop_grace_period" in service:
        flags += ["--stop-grace-period", str(service["stop_grace_period"])]
    for cap in service.get("cap_drop", []):
        flags += ["--cap-drop", cap]
    if service.get("read_only"):
        flags.append("--read-only")
    for target in service.get("tmpfs", []):
        flags += ["--mount", f"type=tmpfs,target={target}"]
    logging = service.get("logging")
    if logging:
        flags += ["--log-driver", logging["driver"]]
        for name, value in logging.get("options", {}).items():
            flags += ["--log-opt", f"{name}={value}"]
    return flags


def render_swarm(
    plan: BottlePlan, *, node_id: str, node_hostname: str, registry: str | None, given: Sequence[str] | None = None
) -> SwarmBottle:
    """The swarm bottle of ``plan``, both services pinned to the node ``node_id``. With a
    ``registry``, the images are pulled from it (`bottle-tui images push` put them there);
    without, they must be on the node already and the manager does not look them up. ``given``:
    the credentials set on this host (default: all the plan names); only those become secrets."""
    spec = render_compose(plan, host_uid=BUNDLE_UID, host_gid=BUNDLE_UID)
    agent_svc, bundle_svc = spec["services"]["agent"], spec["services"]["sidecars"]
    slug = plan.slug
    internal, egress = network_name(slug, "internal"), network_name(slug, "egress")
    net_labels = [f"--label={k}={v}" for k, v in spec["networks"]["internal"]["labels"].items()]
    networks = [
        ["network", "create", "--driver", "overlay", "--internal", *net_labels, internal],
        ["network", "create", "--driver", "overlay", *net_labels, egress],
    ]
    placement = [
        "--constraint",
        f"node.id=={node_id}",
        "--label",
        f"{NODE_LABEL}={node_hostname}",
        "--container-label",
        f"{NODE_LABEL}={node_hostname}",
    ]
    common = [
        "service",
        "create",
        "--detach",
        "--replicas",
        "1",
        "--restart-condition",
        "any",
        "--restart-delay",
        "1s",
        # No virtual IP: names on the internal overlay resolve to the task itself (no IPVS, no mesh).
        "--endpoint-mode",
        "dnsrr",
        *(["--with-registry-auth"] if registry else ["--no-resolve-image"]),
        *placement,
    ]

    def image(ref: str) -> str:
        return f"{registry}/{ref}" if registry else ref

    secrets = {secret_name(slug, n): n for n in plan.secret_env_names if given is None or n in given}
    aliases = bundle_svc["networks"]["internal"]["aliases"]
    state_labels = [f"volume-label={labels.MANAGED}=true", f"volume-label={labels.SLUG}={slug}"]
    bundle = [
        *common,
        "--name",
        service_name(slug, "sidecars"),
        *_flags({k: v for k, v in bundle_svc.items() if k in TRANSLATED and k != "image"}),
        "--env",
        f"BOTTLE_SECRETS_DIR={layout.SECRETS_DIR}",
        "--env",
        f"BOTTLE_SEED_MARK={SEED_MARK}",
        "--mount",
        ",".join([f"type=volume,source={state_volume(slug)},target={layout.BUNDLE_STATE}", *state_labels]),
        "--network",
        ",".join([f"name={internal}", *(f"alias={a}" for a in aliases)]),
        "--network",
        egress,
        *(
            arg
            for name, env_name in secrets.items()
            for arg in (
                "--secret",
                f"source={name},target={env_name},uid={BUNDLE_UID},gid={BUNDLE_UID},mode=0400",
            )
        ),
        image(bundle_svc["image"]),
    ]
    agent = [
        *common,
        "--name",
        service_name(slug, "agent"),
        *_flags({k: v for k, v in agent_svc.items() if k in TRANSLATED and k not in ("image", "command")}),
        "--mount",
        ",".join([f"type=volume,source={volume_name(slug)},target={AGENT_HOME}", *state_labels]),
        "--config",
        f"source={ca_config_name(slug)},target={CA_MOUNT}/{CA_CERT_NAME},mode=0444",
        "--network",
        internal,
        image(agent_svc["image"]),
        *agent_svc["command"],
    ]
    return SwarmBottle(
        networks=networks,
        secrets=secrets,
        ca_config=ca_config_name(slug),
        bundle=bundle,
        agent=agent,
        names={
            "agent": service_name(slug, "agent"),
            "sidecars": service_name(slug, "sidecars"),
            "internal": internal,
            "egress": egress,
            "state": state_volume(slug),
            "work": volume_name(slug),
        },
    )
