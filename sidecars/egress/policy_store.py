"""The state egress's addons share: the policy in force (routes.yaml, reloaded on change), the DLP
engine, the routes allowed once that have been used, and what each live flow is waiting for.

One store per proxy process; every addon reads the policy here, so a reload is seen by all at once.
The bundle runs several such processes (workers, bottle_contract.workers) over the same folder:
what one of them decides that binds the others (a route allowed once is used up) goes through
files under a lock in the workers' run folder.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import routes as R

from bottle_contract import layout, workers
from bottle_contract.files import atomic_write, locked
from bottle_contract.policy import DlpSettings, Policy

logger = logging.getLogger("egress")

# The stages an allowed request must pass before its credential is injected; each addon that
# checks agent data marks its stage cleared on the flow's Pending, and injection refuses a flow
# with a required stage not cleared (an addon that raised or never ran leaves it uncleared).
DLP_HEAD = "dlp head"
DLP_BODY = "dlp body"
MODEL_API = "model api"
ROUTE_BODY = "route body"  # a method override in the body, on a route limited by method


def _stat_sig(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


@dataclass
class Pending:
    """An allowed flow waiting for its checks (and its body) before its credential is injected."""

    route: int
    reason: str
    headers: dict[str, str]
    secrets: list[str]
    settings: DlpSettings
    fields: dict[str, Any]
    once: str | None = None
    required: set[str] = field(default_factory=lambda: {DLP_HEAD, DLP_BODY})
    cleared: set[str] = field(default_factory=set)
    streamed: bool = False  # the body streams: headers leave when requestheaders returns
    model: str | None = None  # a Messages API request's `model` (model_api reads the body)

    def missing(self, stages: set[str] | None = None) -> set[str]:
        return (self.required if stages is None else stages & self.required) - self.cleared


class PolicyStore:
    def __init__(
        self,
        state_dir: str,
        environ: Mapping[str, str],
        dlp: Any,
        dlp_error: str | None,
        rule_ids: frozenset[str],
        worker: tuple[int, int] = (1, 1),
        run_dir: str | None = None,
    ):
        self.state_dir = state_dir
        # This process's number among the bundle's workers, and their count.
        self.worker, self.workers = worker
        self.run_dir = run_dir or workers.run_dir_of(state_dir)
        try:
            os.makedirs(self.run_dir, mode=0o700, exist_ok=True)
        except OSError as e:
            logger.warning(f"egress: cannot make the workers' folder {self.run_dir}: {e}")
        self.environ = environ
        # DLP: None when its rules could not be loaded (every request is then blocked).
        self.dlp = dlp
        self.dlp_error = dlp_error
        self.rule_ids = rule_ids
        self.policy: Policy | None = None
        self.policy_error: str | None = "routes.yaml not loaded yet"
        self._routes_sig: tuple[int, int, int] | None = None
        # Ids of routes allowed once that a request has used (kept on disk across restarts).
        self.once_used: set[str] = set()
        # Per flow, by flow id. Scrubbers hold secrets: kept out of flow.metadata so they never
        # end up in a saved or printed flow.
        self.pending: dict[str, Pending] = {}
        # Flows whose credential is injected, with their route's DLP settings (a streamed body's
        # trailers are still to be scanned).
        self.admitted: dict[str, DlpSettings] = {}
        self.scrubbers: dict[str, Any] = {}
        # Blocked flows whose answer waits for the body to end (or for server_connect).
        self.refusals: dict[str, Any] = {}

    # paths -------------------------------------------------------------------------------------
    @property
    def routes_path(self) -> str:
        return os.path.join(self.state_dir, layout.ROUTES)

    @property
    def log_path(self) -> str:
        return os.path.join(self.state_dir, layout.REQUESTS_LOG)

    @property
    def log_lock(self) -> str:
        """The workers' lock for rotating requests.jsonl."""
        return os.path.join(self.run_dir, workers.LOG_LOCK)

    @property
    def ready_path(self) -> str:
        return os.path.join(self.state_dir, layout.READY)

    @property
    def once_used_path(self) -> str:
        return os.path.join(self.state_dir, layout.EGRESS_ONCE_USED)

    @property
    def upstream_ca_path(self) -> str:
        return os.path.join(self.state_dir, layout.UPSTREAM_CA)

    @property
    def bottle(self) -> str:
        return self.policy.bottle if self.policy else "?"

    # policy ------------------------------------------------------------------------------------
    def reload(self, force: bool = False) -> bool:
        """Load routes.yaml when it changed (or when forced); a bad file keeps the previous policy."""
        sig = _stat_sig(self.routes_path)
        if not force and sig == self._routes_sig:
            return False
        self._routes_sig = sig  # also for a bad file: retry only once it changes again
        try:
            policy = R.load_routes(self.routes_path)
            unknown = policy.unknown_rules(self.rule_ids) if self.dlp is not None else None
            if unknown:
                raise ValueError(f"{self.routes_path}: {unknown}")
        except ValueError as e:
            self.policy_error = str(e)
            kept = "keeping the previous policy" if self.policy else "blocking every request"
            # warning, not error: mitmdump exits on errors logged during startup.
            logger.warning(f"egress: {e}; {kept}")
            return False
        self.policy, self.policy_error = policy, None
        logger.info(f"egress: loaded {len(policy.routes)} route(s) of bottle {policy.bottle}")
        return True

    def load_once_used(self) -> None:
        try:
            with open(self.once_used_path, encoding="utf-8") as f:
                used = json.load(f)
            self.once_used = {u for u in used if isinstance(u, str)} if isinstance(used, list) else set()
        except (OSError, ValueError, RecursionError):
            self.once_used = set()

    def claim_once(self, once: str) -> bool:
        """Use up the route allowed once ``once``: True for the one request of all workers that
        gets it (the file is read and written under the workers' lock), False once it is used."""
        try:
            os.makedirs(self.run_dir, mode=0o700, exist_ok=True)
            with locked(os.path.join(self.run_dir, workers.ONCE_USED_LOCK)):
                self.load_once_used()
                if once in self.once_used:
                    return False
                self.once_used.add(once)
                # Only ids still in the policy matter: the file stays as small as the routes allowed once.
                live = {r.once for r in self.policy.routes if r.once} if self.policy else set()
                self.once_used &= live | {once}
                atomic_write(self.once_used_path, json.dumps(sorted(self.once_used)) + "\n", mode=0o644)
        except OSError as e:
            # Not recorded, so not admitted: another worker could not know it was used.
            logger.warning(f"egress: cannot record a route allowed once as used: {e}")
            return False
        return True

    # flows -------------------------------------------------------------------------------------
    def forget(self, flow_id: str) -> None:
        """Drop all that is kept for a flow (it ended, failed or was refused)."""
        self.pending.pop(flow_id, None)
        self.admitted.pop(flow_id, None)
        self.scrubbers.pop(flow_id, None)
        self.refusals.pop(flow_id, None)
