"""Pure renderers from a BottlePlan to the files a docker bottle needs: the compose spec and routes.yaml.

Two services: ``agent`` (only on the ``internal`` network, which has no route out and gives the
host no address) and ``sidecars`` (the bundle: on ``internal`` under the aliases the agent uses,
and on ``egress``, the one network with a way out).
"""

from __future__ import annotations

from typing import Any

import yaml

from ...manifest import Route
from ...plan import CA_MOUNT, WORKDIR, BottlePlan
from . import labels
from .engine import container_name

AGENT_USER = "1000:1000"
SIDECAR_ALIASES = ("egress", "supervise", "status")
STOP_GRACE = "3s"


def bottle_labels(plan: BottlePlan) -> dict[str, str]:
    return {
        labels.MANAGED: "true",
        labels.SLUG: plan.slug,
        labels.AGENT: plan.agent.name,
        labels.BOTTLE: plan.bottle.name,
        labels.BACKEND: plan.backend,
        labels.STARTED_AT: plan.started_at,
        labels.HOME: str(plan.home),
    }


def _bind(source: object, target: str, *, read_only: bool) -> dict[str, Any]:
    return {"type": "bind", "source": str(source), "target": target, "read_only": read_only}


def render_compose(plan: BottlePlan, *, host_uid: int, host_gid: int) -> dict[str, Any]:
    """The compose spec of one bottle. ``host_uid``/``host_gid`` run the sidecars as the operator,
    so files they write in the bind-mounted state folder stay the operator's."""
    res = plan.bottle.resources
    common_labels = bottle_labels(plan)
    hardening = {"cap_drop": ["ALL"], "security_opt": ["no-new-privileges:true"]}
    agent = {
        "image": plan.images["agent"],
        "container_name": container_name(plan.project, "agent"),
        "init": True,
        "command": ["sleep", "infinity"],
        "user": AGENT_USER,
        "working_dir": WORKDIR,
        "hostname": plan.slug,
        "environment": dict(sorted(plan.agent_env.items())),
        "networks": ["internal"],
        "volumes": [_bind(plan.state.ca, CA_MOUNT, read_only=True)],
        "labels": common_labels,
        "cpus": res.cpus,
        "mem_limit": f"{res.memory_mib}m",
        "pids_limit": res.pids,
        "stop_grace_period": STOP_GRACE,
        **hardening,
    }
    sidecars = {
        "image": plan.images["sidecars"],
        "container_name": container_name(plan.project, "sidecars"),
        "user": f"{host_uid}:{host_gid}",
        "environment": {
            "BOTTLE_DAEMONS": ",".join(plan.daemons),
            "BOTTLE_NAME": plan.bottle.name,
            "BOTTLE_SLUG": plan.slug,
            "HOME": "/tmp",
            "BOTTLE_SUPERVISE_TIMEOUT": str(plan.bottle.supervise.timeout_seconds),
            # bottle_init gives each daemon only the secrets its variable lists (daemons.json: secrets_from).
            "BOTTLE_EGRESS_SECRETS": ",".join(plan.daemon_secrets["egress"]),
            # Values come from the environment of `docker compose up`, never from a file.
            **{name: None for name in plan.secret_env_names},
        },
        "networks": {"internal": {"aliases": list(SIDECAR_ALIASES)}, "egress": {}},
        "volumes": [_bind(plan.state.egress, "/state/egress", read_only=False),
                    _bind(plan.state.supervise, "/state/supervise", read_only=False),
                    _bind(plan.state.status, "/state/status", read_only=False)],
        "read_only": True,
        "tmpfs": ["/tmp", "/run/bottle-init"],
        "labels": common_labels,
        "stop_grace_period": STOP_GRACE,
        **hardening,
    }
    net_labels = {labels.MANAGED: "true", labels.SLUG: plan.slug, labels.HOME: str(plan.home)}
    return {
        "name": plan.project,
        "services": {"agent": agent, "sidecars": sidecars},
        "networks": {
            "internal": {
                "internal": True,
                # Without this the bridge holds the gateway address and the agent reaches the host.
                "driver_opts": {"com.docker.network.bridge.inhibit_ipv4": "true"},
                "labels": net_labels,
            },
            "egress": {"labels": net_labels},
        },
    }


def _route_doc(route: Route) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "host": route.host,
        "ports": list(route.ports),
        "methods": list(route.methods),
        "paths": list(route.paths),
    }
    if route.auth:
        auth: dict[str, Any] = {"scheme": route.auth.scheme, "token_env": route.auth.token_env}
        if route.auth.header:
            auth["header"] = route.auth.header
        doc["auth"] = auth
    return doc


def render_routes(plan: BottlePlan) -> dict[str, Any]:
    """routes.yaml for egress: the bottle's allowlist, with credentials named by env var only."""
    return {"version": 1, "bottle": plan.bottle.name, "routes": [_route_doc(r) for r in plan.routes]}


class _PlainDumper(yaml.SafeDumper):
    """Writes shared sub-documents out in full: no &anchors / *aliases in files people read."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def to_yaml(doc: dict[str, Any]) -> str:
    return yaml.dump(doc, Dumper=_PlainDumper, sort_keys=False)
