"""mitmproxy 11 addon of the bottle's egress: enforce routes.yaml, inject real credentials, scrub them
from responses, and log every decision to requests.jsonl.

As mitmproxy's own addons are, egress is a list of small addons, each with one concern, over one
policy store and one decision log; mitmproxy runs each hook through them in this order:

- ``lifecycle.Lifecycle``: routes.yaml at start and on SIGHUP, the ready file, upstream trust;
- ``tunnels.RawTunnelRefusal``: tunnels and flows that carry no HTTP;
- ``gate.RouteGate``: which route allows a request, its credential, the upstream connect guard;
- ``model_api.ModelApiGuard``: server-side tools a Messages API request would turn on;
- ``metering.BudgetGate``: which model calls are metered, and the 429 once the budget is reached;
- ``scanning.RequestScanning``: DLP over everything the agent sends;
- ``injection.CredentialInjection``: the real credential, once every required check cleared;
- ``scrubbing.ResponseScrubbing``: the credential out of everything that comes back;
- ``metering.UsageMeter``: each model call's usage, read from its answer as it passes.

Every hook that looks at agent data fails closed (``failclosed``).
"""

from __future__ import annotations

import logging
import os

# Imported through the daemon's pythonpath (daemons.json): its own folder and the contract.
import dlp as D
import dlp.request as DR
from decisions import LOG_MAX_BYTES, DecisionLog
from dlp.provenance import Provenance
from gate import RouteGate
from injection import CredentialInjection
from lifecycle import Lifecycle
from metering import BudgetGate, Meter, UsageMeter
from model_api import ModelApiGuard
from policy_store import PolicyStore
from scanning import RequestScanning
from scrubbing import ResponseScrubbing
from tunnels import RawTunnelRefusal

from bottle_contract import layout, workers

logger = logging.getLogger("egress")

STATE_ENV = "BOTTLE_EGRESS_STATE"
DLP_RULES_ENV = "BOTTLE_DLP_RULES"
DEFAULT_STATE_DIR = layout.bundle_path(layout.EGRESS)


def load_dlp(rules: str, run_dir: str) -> tuple[DR.RequestScanner | None, str | None, frozenset[str]]:
    """DLP over gitleaks' pinned rules (its Hyperscan database was compiled at image build). When
    they cannot be loaded, every request that would leave is blocked instead (fail closed). Its
    provenance store is the workers' shared one, in ``run_dir``."""
    try:
        scanner = D.Scanner.load(rules)
        provenance = Provenance(shared=run_dir)
        return DR.RequestScanner(scanner, provenance=provenance), None, frozenset(scanner.rules.by_id())
    except Exception as e:
        error = " ".join(str(e).split()) or type(e).__name__
        logger.warning(f"egress: DLP rules cannot be loaded ({error}); blocking every request")
        return None, error, frozenset()


class WorkerTag(logging.Filter):
    """Names the worker in egress's log lines (``egress.2: ...``) when there are several: the
    bundle's log holds all of theirs."""

    def __init__(self, number: int) -> None:
        super().__init__()
        self.prefix = f"egress.{number}:"

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith("egress:"):
            record.msg = self.prefix + record.msg[len("egress:") :]
        return True


def this_worker(environ) -> tuple[int, int]:
    """(this worker's number, the count) as init told it (bottle_contract.workers); (1, 1) alone."""
    try:
        count = int(environ.get(workers.WORKERS_ENV, "1"))
        number = int(environ.get(workers.WORKER_ENV, "1"))
    except ValueError:
        return 1, 1
    return (number, count) if 1 <= number <= count else (1, 1)


class Egress:
    """The bottle's egress: its addons (``addons``, run by mitmproxy in order) and their store."""

    def __init__(
        self,
        state_dir: str | None = None,
        environ=None,
        log_max_bytes: int = LOG_MAX_BYTES,
        dlp_rules: str | None = None,
        worker: tuple[int, int] | None = None,
    ):
        state_dir = state_dir or os.environ.get(STATE_ENV, DEFAULT_STATE_DIR)
        run_dir = workers.run_dir_of(state_dir)
        dlp, dlp_error, rule_ids = load_dlp(dlp_rules or os.environ.get(DLP_RULES_ENV) or str(D.RULES_PATH), run_dir)
        self.store = PolicyStore(
            state_dir,
            os.environ if environ is None else environ,
            dlp,
            dlp_error,
            rule_ids,
            worker=worker or this_worker(os.environ),
            run_dir=run_dir,
        )
        if self.store.workers > 1 and worker is None:
            logger.addFilter(WorkerTag(self.store.worker))
        self.log = DecisionLog(self.store, log_max_bytes)
        self.meter = Meter(self.store)
        # A budget decision rewrites metering.json and sends SIGHUP: usage.json's level follows at once.
        self.lifecycle = Lifecycle(self.store, also_reload=[lambda: self.meter.reload(force=True)])
        self.addons = [
            self.lifecycle,
            RawTunnelRefusal(self.log),
            RouteGate(self.store, self.log),
            ModelApiGuard(self.store, self.log),
            BudgetGate(self.meter, self.store, self.log),
            RequestScanning(self.store, self.log),
            CredentialInjection(self.store, self.log),
            ResponseScrubbing(self.store, self.log),
            UsageMeter(self.meter),
        ]

    @property
    def state_dir(self) -> str:
        return self.store.state_dir


addons = [Egress()]
