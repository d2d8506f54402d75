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

from bottle_contract import layout

logger = logging.getLogger("egress")

STATE_ENV = "BOTTLE_EGRESS_STATE"
DLP_RULES_ENV = "BOTTLE_DLP_RULES"
DEFAULT_STATE_DIR = layout.bundle_path(layout.EGRESS)


def load_dlp(rules: str) -> tuple[DR.RequestScanner | None, str | None, frozenset[str]]:
    """DLP over gitleaks' pinned rules (its Hyperscan database was compiled at image build). When
    they cannot be loaded, every request that would leave is blocked instead (fail closed)."""
    try:
        scanner = D.Scanner.load(rules)
        return DR.RequestScanner(scanner, provenance=Provenance()), None, frozenset(scanner.rules.by_id())
    except Exception as e:
        error = " ".join(str(e).split()) or type(e).__name__
        logger.warning(f"egress: DLP rules cannot be loaded ({error}); blocking every request")
        return None, error, frozenset()


class Egress:
    """The bottle's egress: its addons (``addons``, run by mitmproxy in order) and their store."""

    def __init__(
        self,
        state_dir: str | None = None,
        environ=None,
        log_max_bytes: int = LOG_MAX_BYTES,
        dlp_rules: str | None = None,
    ):
        dlp, dlp_error, rule_ids = load_dlp(dlp_rules or os.environ.get(DLP_RULES_ENV) or str(D.RULES_PATH))
        self.store = PolicyStore(
            state_dir or os.environ.get(STATE_ENV, DEFAULT_STATE_DIR),
            os.environ if environ is None else environ,
            dlp,
            dlp_error,
            rule_ids,
        )
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
