"""The state both sides share: one folder per sidecar, bind-mounted as a folder (never a single
file: a single-file mount pins the inode and breaks write-temp-then-rename), and the files in it.

On the host a sidecar's folder is ``state/<slug>/<folder>/`` (bottle_tui.state.StateDir); in the
bundle it is ``/state/<folder>/`` (``bundle_path``). Every file the bundle writes there has a
bound, named here (``Cap``): the operator's disk is never the agent's to fill.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

BUNDLE_STATE = "/state"  # where the bundle sees the sidecar folders
# A bundle whose state is a volume of its own (a swarm bottle, on another machine): the host seeds
# the volume through the engine (the bundle's control command), and this mark at the volume's top
# says it is done; init starts no daemon before it exists. A restarted task finds it and the
# policy and queue of its last run.
SEEDED = ".seeded"
# Where the bundle reads the credentials it injects when they come as files (Docker secrets), one
# file per env var name; the docker bottle passes them in init's environment instead.
SECRETS_DIR = "/run/secrets"

# --- the sidecar folders ----------------------------------------------------------------------------
EGRESS = "egress"
SUPERVISE = "supervise"
GIT_GATE = "git-gate"
STATUS = "status"
SIDECAR_FOLDERS = (EGRESS, SUPERVISE, GIT_GATE, STATUS)

# --- files ------------------------------------------------------------------------------------------
READY = "ready"  # in each sidecar's folder: the daemon's "I am up" (JSON)
UPSTREAM_CA = "upstream-ca.pem"  # egress/ and git-gate/: extra trust for upstream TLS
ROUTES = "routes.yaml"  # egress/: the policy in force (routes and DLP settings)
REQUESTS_LOG = "requests.jsonl"  # egress/: one decision per line
USAGE = "usage.json"  # egress/: what the bottle spent on metered routes, and its budget's level
EGRESS_CA_KEY = "mitmproxy-ca.pem"  # egress/: the egress CA, key and certificate (mitmproxy's name)
EGRESS_CA_CERT = "mitmproxy-ca-cert.pem"  # egress/: the certificate alone
EGRESS_ONCE_USED = "once-used.json"  # egress/: ids of routes allowed once that a request has used
METERING = "metering.json"  # egress/: what the host has egress meter: hosts, prices, the budget (usage.py)
USAGE = "usage.json"  # egress/: what the bottle spent, per model, and the budget's level (usage.py)
QUEUE = "queue"  # supervise/queue/: one JSON file per proposal
# supervise/slug: the bottle's slug, written by the host when it claims a warm bottle (whose bundle
# started before it had one); supervise reads it for each proposal, over its BOTTLE_SLUG.
SLUG_FILE = "slug"
QUEUE_LOCK = ".lock"  # supervise/queue/.lock: held for every read-modify-write of the queue or the policy
SUPERVISE_SETTINGS = "settings.json"  # supervise/: the operator's settings for the daemon
EGRESS_CURSOR = "egress-cursor.json"  # supervise/: how far it has read requests.jsonl
GATE_CONFIG = "gate.json"  # git-gate/: upstream, branch, protected refs
PUSH_LOG = "pushes.jsonl"  # git-gate/: one line per push decision
MIRROR = "mirror"  # git-gate/mirror/<repo>.git: the bare repository the agent fetches from and pushes to
STATUS_FILE = "status.json"  # status/: what claude's hooks last reported


@dataclass(frozen=True)
class Cap:
    """A log's bound: rotated at ``max_bytes``, ``keep`` older files (``.1`` newest)."""

    max_bytes: int
    keep: int

    @property
    def total(self) -> int:
        return self.max_bytes * (self.keep + 1)


REQUESTS_LOG_CAP = Cap(16 << 20, 4)  # 80 MiB at most
PUSH_LOG_CAP = Cap(4 << 20, 2)  # 12 MiB at most
# The engine's log of the sidecars container (its daemons' stderr, json-file), which the host
# copies into compose.log at teardown; a whole MiB count (docker's max-size takes units).
BUNDLE_LOG_CAP = Cap(10 << 20, 2)  # 30 MiB at most
MAX_PENDING = 200  # proposals waiting for the operator, per bottle (supervise refuses more)
# Decided proposals kept in the queue folder, per bottle: beyond it supervise removes the oldest
# decided ones (the audit log keeps every decision). A proposal is a few KB at most (MAX_REASON).
MAX_DECIDED = 500


def mirror_git_dir(repo: str) -> str:
    """The gate's mirror of ``repo`` relative to the git-gate folder (the gate and the host agree)."""
    return posixpath.join(MIRROR, f"{repo}.git")


def sibling_queue(sidecar_folder: str) -> str:
    """The proposal queue beside a sidecar's folder (``/state/git-gate`` -> ``/state/supervise/queue``):
    the git gate queues git-push proposals where supervise queues the rest."""
    return posixpath.join(posixpath.dirname(sidecar_folder.rstrip("/")), SUPERVISE, QUEUE)


def bundle_path(folder: str, *names: str) -> str:
    """Where the bundle sees ``names`` in the sidecar ``folder`` (``/state/<folder>/...``)."""
    if folder not in SIDECAR_FOLDERS:
        raise ValueError(f"{folder!r} is not a sidecar folder ({', '.join(SIDECAR_FOLDERS)})")
    return posixpath.join(BUNDLE_STATE, folder, *names)
