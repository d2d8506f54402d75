"""egress's workers: how many proxy processes share the bundle's one proxy port (``egress.workers``
of a bottle: a count, or ``auto`` for the bundle's CPU allowance), what init tells each of them,
the run folder they share, and the one ready file they write together.

The host renders ``BOTTLE_EGRESS_WORKERS`` (``auto`` or a count) into the bundle's environment;
init resolves it (``resolve``) and starts the workers ``egress.1`` .. ``egress.N``, each with its
number in ``BOTTLE_EGRESS_WORKER`` and the count in ``BOTTLE_EGRESS_WORKERS``.

The ready file (``layout.READY`` in the egress folder) holds one entry per worker::

    {"workers": N, "pid": <a worker's pid>, "listen_host": ..., "listen_port": ..., "ca_cert": ...,
     "at": <the newest entry's time>,
     "routes_loaded": <every worker runs a policy>, "routes_error": <a worker's refusal, or null>,
     "worker": {"1": {"pid", "routes_loaded", "routes_error", "loads", "at"}, ...}}

``loads`` counts the policy loads of a worker (start and every SIGHUP): a host that sent SIGHUP
knows every worker reloaded when each one's count (or pid) moved (``reloaded``).
"""

from __future__ import annotations

import hashlib
import math
import os
from typing import Any

WORKERS_ENV = "BOTTLE_EGRESS_WORKERS"  # host -> init: "auto" or a count; init -> worker: the count
WORKER_ENV = "BOTTLE_EGRESS_WORKER"  # init -> worker: its number, 1 .. count
AUTO = "auto"
MAX_WORKERS = 8  # more would outgrow the bundle's memory (each worker holds DLP's database)
AUTO_MAX = 4  # ``auto`` takes the CPU allowance, up to this many
# What the workers share besides the egress folder: locks, the provenance log (dlp/provenance)
# and its key. A tmpfs of the bundle (gone with it), never on the operator's disk.
RUN_DIR = "/tmp/bottle-egress"  # + "-<digest of the egress folder>" (run_dir_of)
READY_LOCK = "ready.lock"
ONCE_USED_LOCK = "once-used.lock"
USAGE_LOCK = "usage.lock"
LOG_LOCK = "requests.lock"  # rotating requests.jsonl


def workers_problem(value: object) -> str | None:
    """Why ``value`` is not a worker count (1 .. MAX_WORKERS, or "auto"), else None."""
    if value == AUTO:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_WORKERS:
        return f"must be a whole number from 1 to {MAX_WORKERS}, or {AUTO} (the bundle's CPUs, up to {AUTO_MAX})"
    return None


def cpu_allowance(cgroup: str = "/sys/fs/cgroup") -> int:
    """The CPUs this process may use: its affinity, lowered by a cgroup CPU quota (v2 ``cpu.max``,
    v1 ``cpu.cfs_quota_us``), rounded up; at least 1."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota: float | None = None
    try:
        with open(os.path.join(cgroup, "cpu.max"), encoding="ascii") as f:
            limit, period = f.read().split()[:2]
        quota = None if limit == "max" else int(limit) / int(period)
    except (OSError, ValueError):
        for folder in ("cpu", "cpu,cpuacct"):
            try:
                with open(os.path.join(cgroup, folder, "cpu.cfs_quota_us"), encoding="ascii") as f:
                    us = int(f.read())
                with open(os.path.join(cgroup, folder, "cpu.cfs_period_us"), encoding="ascii") as f:
                    period_us = int(f.read())
            except (OSError, ValueError):
                continue
            quota = us / period_us if us > 0 and period_us > 0 else None
            break
    if quota is not None:
        count = min(count, math.ceil(quota))
    return max(1, count)


def resolve(value: str | None, allowance: int, name: str = WORKERS_ENV) -> int:
    """The number of workers the variable ``name`` (``value``) asks for (unset: one); ValueError
    with a one-line reason when it is neither a count nor "auto"."""
    text = (value or "1").strip()
    if text == AUTO:
        return max(1, min(AUTO_MAX, allowance))
    count = int(text) if text.isdigit() else -1
    if workers_problem(count) is not None:
        raise ValueError(f"{name}={value!r} {workers_problem(count)}")
    return count


def worker_name(group: str, number: int) -> str:
    """init's name for worker ``number`` of a daemon run as several (``egress.2``)."""
    return f"{group}.{number}"


# --- the ready file -----------------------------------------------------------------------------------


def ready_with(doc: object, worker: int, workers: int, entry: dict[str, Any], shared: dict[str, Any]) -> dict[str, Any]:
    """The ready document ``doc`` (as read, maybe None) with worker ``worker``'s ``entry`` (None:
    the worker left) and the fields all workers share (``shared``: listen address, CA). Entries
    of workers beyond ``workers`` are dropped."""
    old = doc.get("worker") if isinstance(doc, dict) else None
    entries = {k: v for k, v in (old or {}).items() if k.isdigit() and 1 <= int(k) <= workers and isinstance(v, dict)}
    if entry is None:
        entries.pop(str(worker), None)
    else:
        entries[str(worker)] = entry
    errors = [e.get("routes_error") for e in entries.values() if e.get("routes_error")]
    first = entries[min(entries, key=int)] if entries else {}
    return {
        **shared,
        "workers": workers,
        "pid": first.get("pid"),
        "at": max((str(e.get("at", "")) for e in entries.values()), default=None),
        "routes_loaded": len(entries) == workers and all(e.get("routes_loaded") for e in entries.values()),
        "routes_error": errors[0] if errors else None,
        "worker": dict(sorted(entries.items(), key=lambda kv: int(kv[0]))),
    }


def ready_entries(doc: object) -> dict[str, dict[str, Any]]:
    """Each worker's entry of a ready document (a document of one worker without entries counts
    as worker 1)."""
    if not isinstance(doc, dict):
        return {}
    entries = doc.get("worker")
    if isinstance(entries, dict):
        return {k: v for k, v in entries.items() if isinstance(v, dict)}
    return {"1": doc}


def reloaded(before: object, after: object) -> bool:
    """Whether every worker ``after`` names has loaded its policy since ``before`` (both ready
    documents): its load count grew or it is another process; and all of them are there."""
    old, new = ready_entries(before), ready_entries(after)
    count = after.get("workers", len(new)) if isinstance(after, dict) else 0
    if not new or len(new) != count:
        return False
    for k, e in new.items():
        was = old.get(k)
        if was is not None and was.get("pid") == e.get("pid") and e.get("loads", 0) <= was.get("loads", 0):
            return False
    return True


def run_dir_of(state_dir: str) -> str:
    """The run folder of the workers over egress folder ``state_dir`` (the same for each of them,
    another for another folder): ``RUN_DIR-<digest of the folder's path>``."""
    digest = hashlib.sha256(os.path.abspath(state_dir).encode()).hexdigest()[:16]
    return f"{RUN_DIR}-{digest}"
