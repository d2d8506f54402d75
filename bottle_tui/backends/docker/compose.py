"""Pure renderers from a BottlePlan to the files a docker bottle needs: the compose spec and routes.yaml.

Two services: ``agent`` (only on the ``internal`` network, which has no route out and gives the
host no address) and ``sidecars`` (the bundle: on ``internal`` under the aliases the agent uses,
and on ``egress``, the one network with a way out).
"""

from __future__ import annotations

from typing import Any

from bottle_contract import layout, ports, workers
from bottle_contract.policy import Policy, yaml_text

from ...plan import AGENT_HOME, CA_MOUNT, GIT_GATE_HOST, WORKDIR, BottlePlan
from . import labels
from .engine import container_name
from .workspace import volume_name

AGENT_USER = "1000:1000"
SIDECAR_ALIASES = ("egress", "status")
GIT_GATE_MOUNT = "/state/git-gate"
# Bounds the gate's fetch from upstream before it serves a clone, fetch or push; the first mirror
# of a large repository may take much longer.
GIT_REFRESH_TIMEOUT = 20
GIT_FIRST_MIRROR_TIMEOUT = 1800
STOP_GRACE = "3s"
# The bundle's own limits: a runaway upload or a fork loop in a daemon stays inside the bundle.
# Egress streams large bodies and refuses blocked ones unread, so its memory stays far below this.
SIDECARS_MEMORY = "768m"
SIDECARS_PIDS = 256

# The one YAML writer (the contract's), under the name the renderers' callers use.
to_yaml = yaml_text


def bottle_labels(plan: BottlePlan) -> dict[str, str]:
    return {
        labels.MANAGED: "true",
        labels.SLUG: plan.slug,
        # A pool member has no agent until a claim gives it one (the labels cannot change then).
        labels.AGENT: "" if plan.pooled else plan.agent.name,
        labels.BOTTLE: plan.bottle.name,
        labels.BACKEND: plan.backend,
        labels.STARTED_AT: plan.started_at,
        labels.HOME: str(plan.home),
        **({labels.POOL: plan.bottle.name} if plan.pooled else {}),
    }


def _bind(source: object, target: str, *, read_only: bool) -> dict[str, Any]:
    return {"type": "bind", "source": str(source), "target": target, "read_only": read_only}


def render_compose(plan: BottlePlan, *, host_uid: int, host_gid: int, volume: str | None = None) -> dict[str, Any]:
    """The compose spec of one bottle. ``host_uid``/``host_gid`` run the sidecars as the operator,
    so files they write in the bind-mounted state folder stay the operator's. ``volume``: the work
    volume when it is not the slug's (a resumed claimed pool member keeps its member's)."""
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
        # A pool member's name is no one's: its hostname, fixed at create, is its bottle's.
        "hostname": plan.bottle.name if plan.pooled else plan.slug,
        "environment": dict(sorted(plan.agent_env.items())),
        "networks": ["internal"],
        # The agent's home (the checkout, ~/.claude) is the bottle's own volume, created before
        # `up` and outliving `down`: stop archives what it holds, and `--keep` keeps it for resume.
        "volumes": [
            {"type": "volume", "source": "work", "target": AGENT_HOME},
            _bind(plan.state.ca, CA_MOUNT, read_only=True),
        ],
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
            # bottle_init gives each daemon only the secrets its variable lists (daemons.json: secrets_from).
            "BOTTLE_EGRESS_SECRETS": ",".join(plan.daemon_secrets["egress"]),
            # How many egress workers share the proxy port ("auto": init counts the bundle's CPUs).
            workers.WORKERS_ENV: str(plan.bottle.egress_workers),
            "BOTTLE_GIT_GATE_SECRETS": ",".join(plan.daemon_secrets["git-gate"]),
            # Values come from the environment of `docker compose up`, never from a file.
            **{name: None for name in plan.secret_env_names},
        },
        "networks": {
            "internal": {
                "aliases": list(SIDECAR_ALIASES)
                + ([GIT_GATE_HOST] if plan.bottle.git else [])
                + (["supervise"] if plan.supervise_url else [])
            },
            "egress": {},
        },
        "volumes": [_bind(plan.state.egress, "/state/egress", read_only=False)]
        + ([_bind(plan.state.git_gate, GIT_GATE_MOUNT, read_only=False)] if plan.bottle.git else [])
        + ([_bind(plan.state.supervise, "/state/supervise", read_only=False)] if plan.mounts_queue else [])
        + [_bind(plan.state.status, "/state/status", read_only=False)],
        "read_only": True,
        "tmpfs": ["/tmp", "/run/bottle-init"],
        "labels": common_labels,
        "mem_limit": SIDECARS_MEMORY,
        "pids_limit": SIDECARS_PIDS,
        "stop_grace_period": STOP_GRACE,
        # The daemons' stderr may be the agent's to provoke: the engine keeps a bounded log of it.
        "logging": {
            "driver": "json-file",
            "options": {
                "max-size": f"{layout.BUNDLE_LOG_CAP.max_bytes >> 20}m",
                "max-file": str(layout.BUNDLE_LOG_CAP.keep + 1),
            },
        },
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
        "volumes": {"work": {"external": True, "name": volume or volume_name(plan.slug)}},
    }


def render_routes(plan: BottlePlan) -> dict[str, Any]:
    """routes.yaml for egress: the bottle's allowlist with every key written out (egress refuses a
    route that leaves one to a default), and credentials named by env var only. The top-level
    ``dlp`` is the bottle's own: routes added later (approved proposals) start from it."""
    return Policy(bottle=plan.bottle.name, routes=tuple(plan.routes), dlp=plan.bottle.dlp).to_doc()


def render_metering(plan: BottlePlan) -> dict[str, Any]:
    """metering.json for egress: the metered hosts, the price table and the budget, every key
    written out (egress has no defaults of its own)."""
    return plan.metering.to_doc()


def render_git_gate(plan: BottlePlan, *, start: str | None = None) -> dict[str, Any] | None:
    """gate.json for git-gate: every setting explicit (the gate has no defaults of its own). A
    local upstream is written as null: the operator's path never enters the bundle. ``start`` is
    the tip of git.branch the host mirrored from it (what held pushes are counted from)."""
    git = plan.bottle.git
    if not git:
        return None
    return {
        "version": 1,
        "upstream": None if git.local else git.upstream,
        "review": plan.git_review,
        "slug": plan.slug,
        "start": start,
        "repo": plan.git_repo,
        "branch": git.branch,
        "protected": list(git.protected),
        "credentials_env": git.credentials_env,
        "port": ports.GIT_GATE,
        "listen_alias": GIT_GATE_HOST,
        "refresh_timeout_seconds": GIT_REFRESH_TIMEOUT,
        "first_mirror_timeout_seconds": GIT_FIRST_MIRROR_TIMEOUT,
    }
