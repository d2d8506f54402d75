"""Metering and budgets: what each model call of the bottle costs, counted where the agent cannot
go around it, and the budget that holds.

The host's metering.json (``bottle_contract.usage``) names the metered hosts (api.anthropic.com
and any route with ``usage: anthropic``), the price table and the budget. On a metered route,
every Messages API answer is read for its ``usage``: a JSON body whole, a ``text/event-stream``
as it passes (``message_start`` and ``message_delta``, read chunk by chunk by a wrapper around
whatever streams the body, which hands every chunk on as it came: no event is held back, and
nothing a stream holds can make the wrapper raise or stop it). The counters go to usage.json,
written atomically off the event loop a moment after they change.

Two addons over one ``Meter``: ``BudgetGate`` on the request side (before DLP and injection),
which answers every Messages API request on a metered route with a 429 in the API's own error
shape once the budget is reached, and ``UsageMeter`` on the response side (after scrubbing, which
decides whether a body streams). The bundle's egress workers share usage.json: each adds what it
counted to the file's counts under the workers' lock, and reads the others' (when the file
changed) before it admits a model call, so one budget holds across them; an answer that ended is
written at once, not after the usual delay. Reaching the budget queues a ``budget`` proposal (written into
the proposal queue as the git gate writes its pushes); the operator's approval rewrites
metering.json, which egress reloads on the next request. A response in flight when the budget is
reached is never cut: the next request is refused.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import zlib
from collections.abc import Callable
from typing import Any

from decisions import DecisionLog
from failclosed import REQUEST, guarded
from mitmproxy import http
from model_api import is_messages_request
from policy_store import PolicyStore, _stat_sig
from request_target import routed_path
from scrubbing import decode_all
from sse import SseReader

from bottle_contract import layout, workers
from bottle_contract import proposal as contract
from bottle_contract.clock import now_iso
from bottle_contract.files import atomic_write, locked
from bottle_contract.hosts import normalize_host
from bottle_contract.usage import (
    CACHE_1H,
    TOKEN_KEYS,
    Ledger,
    Metering,
    UsageError,
    load_metering,
    price_of,
    write_usage,
)

logger = logging.getLogger("egress")

MESSAGES = "/v1/messages"  # the endpoint whose answers carry the usage of a model call
BATCHES = "/v1/messages/batches"  # creating a batch: its usage comes with its results, later
# POSTs on a metered host that cost nothing: under a budget, every other POST that is not a
# Messages API call is refused, since egress could not count it (the legacy /v1/complete, the
# OpenAI-compatible /v1/chat/completions, and whatever endpoint the provider adds next).
FREE_POSTS = frozenset(("/v1/files",))
USAGE_EVENTS = frozenset(("message_start", "message_delta", "content_block_delta", "error"))
# An answer cut before its closing message_delta (the client hung up, or a hostile agent cut it
# to hide the output) still cost what the model generated: its output tokens are then estimated
# from the characters of the deltas that passed, at fewer characters per token than any text
# has on average (English is about 4, code 3 to 3.5), so the estimate errs toward the budget.
CHARS_PER_TOKEN = 3
FLUSH_DELAY = 0.25  # seconds between a change and its write to usage.json (writes coalesce)
MAX_JSON = 8 << 20  # a streamed JSON answer is read up to this size for its usage
MAX_COUNT = 10**12  # a count in one answer beyond this is not believed
MAX_MODELS = 200  # distinct model names counted; more go under OTHER
OTHER = "(other models)"
UNKNOWN = "(unknown model)"
RECHECK_SECONDS = 1.0  # how often a refusal re-reads its budget proposal's decision
MAX_NOTE_SHOWN = 300


class Unreadable(Exception):
    """An answer whose usage cannot be read (a content coding egress does not decode as it streams)."""


def _decoder(coding: str) -> Any:
    coding = coding.strip().lower()
    if coding in ("", "identity"):
        return None
    if coding in ("gzip", "x-gzip"):
        return zlib.decompressobj(31)
    if coding == "deflate":
        return zlib.decompressobj(15)
    raise Unreadable(coding)


class Meter:
    """The bottle's counters (a ``Ledger``), the metering settings in force, and what reaching the
    budget has asked of the operator."""

    def __init__(self, store: PolicyStore, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        # Every worker's counts as usage.json last had them, plus this worker's since.
        self.ledger = Ledger()
        self._unwritten = Ledger()  # this worker's counts not in usage.json yet
        self._usage_sig: tuple[int, int, int] | None = None  # usage.json as this worker last saw it
        self.settings: Metering | None = None
        self.error: str | None = None  # metering.json's problem (None: fine, or absent)
        self._sig: tuple[int, int, int] | None = None
        self.level = "ok"
        self.spent: tuple[float, int, list[str]] = (0.0, 0, [])
        self.flows: dict[str, FlowMeter | None] = {}  # gated flows; None: refused-if-reached only
        self._dirty = False
        self._soon = False
        self._handle: asyncio.TimerHandle | None = None
        self._writing = False
        # Budget limits (usd, tokens) -> the proposal that asks to raise them: id, status, note.
        self.asked: dict[tuple[float | None, int | None], dict[str, Any]] = {}
        self._warned: set[str] = set()
        self.started = False

    @property
    def metering_path(self) -> str:
        return os.path.join(self.store.state_dir, layout.METERING)

    @property
    def usage_path(self) -> str:
        return os.path.join(self.store.state_dir, layout.USAGE)

    def _warn_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            logger.warning(f"egress: {message}")

    # settings and counters ----------------------------------------------------------------------
    def start(self) -> None:
        """At start: the counters so far (a restarted egress goes on counting), the settings."""
        self.started = True
        self._usage_sig = _stat_sig(self.usage_path)
        try:
            with open(self.usage_path, encoding="utf-8") as f:
                self.ledger = Ledger.from_doc(json.load(f)).plus(self._unwritten)
        except FileNotFoundError:
            pass
        except (OSError, ValueError, RecursionError) as e:
            # Kept aside, not lost: the counting starts again from zero.
            self._warn_once(f"{self.usage_path} cannot be read ({type(e).__name__}); counting from zero")
            try:
                with open(self.usage_path, "rb") as f:
                    atomic_write(self.usage_path + ".bad", f.read(1 << 20), mode=0o644)
            except OSError:
                pass
        self.reload(force=True)

    def sync(self) -> None:
        """usage.json again when another worker wrote it since: its counts and this worker's not
        yet written are the bottle's spend."""
        sig = _stat_sig(self.usage_path)
        if sig == self._usage_sig or sig is None:
            return
        self._usage_sig = sig
        try:
            with open(self.usage_path, encoding="utf-8") as f:
                base = Ledger.from_doc(json.load(f))
        except (OSError, ValueError, RecursionError):
            return  # the counts in memory stand
        self.ledger = base.plus(self._unwritten)
        self.recompute()

    def reload(self, force: bool = False) -> None:
        """metering.json again when it changed; a bad one keeps the settings in force."""
        if not self.started:
            return self.start()  # the counts so far first: a reload must never write zeros over them
        sig = _stat_sig(self.metering_path)
        if not force and sig == self._sig:
            return
        self._sig = sig
        if sig is None:
            self.settings, self.error = None, None  # the host meters nothing here
        else:
            try:
                self.settings, self.error = load_metering(self.metering_path), None
            except UsageError as e:
                self.error = str(e)
                kept = "keeping the settings in force" if self.settings else "refusing every Messages API request"
                logger.warning(f"egress: {e}; {kept}")
        self.recompute()
        self.changed()

    def recompute(self) -> None:
        s = self.settings
        self.spent = self.ledger.spent(s.prices if s else {})
        before = self.level
        self.level = s.budget.level(self.spent[0], self.spent[1]) if s and s.budget else "ok"
        if self.level == "reached" and before != "reached":
            self.ask()

    def add(
        self, model: str, counts: dict[str, int], *, request: bool = False, error: bool = False, soon: bool = False
    ) -> None:
        if model not in self.ledger.models and len(self.ledger.models) >= MAX_MODELS:
            model = OTHER
        for ledger in (self.ledger, self._unwritten):
            c = ledger.counts(model)
            for k, v in counts.items():
                c[k] += v
            c["requests"] += int(request)
            c["errors"] += int(error)
        self.recompute()
        self.changed(soon=soon)

    def unread(self) -> None:
        self.ledger.unread += 1
        self._unwritten.unread += 1
        self.changed()

    # usage.json ---------------------------------------------------------------------------------
    def doc(self, ledger: Ledger | None = None, settings: Metering | None = None, bottle: str = "?") -> dict[str, Any]:
        s = self.settings if ledger is None else settings
        return (self.ledger if ledger is None else ledger).to_doc(
            s.slug if s else (self.store.bottle if ledger is None else bottle),
            s.prices if s else {},
            s.budget if s else None,
            self.clock(),
        )

    def changed(self, soon: bool = False) -> None:
        """Something to write: usage.json a moment later (``soon``: at the loop's next turn)."""
        self._dirty = True
        self._soon = self._soon or soon
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()  # no event loop (a test, a tool): write now
            return
        if self._writing:
            return  # _written comes back here
        if self._handle is not None and self._soon:
            self._handle.cancel()
            self._handle = None
        if self._handle is None:
            self._handle = loop.call_later(0 if self._soon else FLUSH_DELAY, self._write_soon, loop)

    def _take(self) -> tuple[Ledger, Metering | None, str]:
        """What this worker has to add to usage.json, taken out of ``_unwritten``."""
        job = (self._unwritten, self.settings, self.store.bottle)
        self._unwritten, self._dirty, self._soon = Ledger(), False, False
        return job

    def _write_soon(self, loop: asyncio.AbstractEventLoop) -> None:
        self._handle = None
        if not self._dirty:
            return
        job = self._take()
        self._writing = True
        loop.run_in_executor(None, self._write, *job).add_done_callback(lambda fut: self._written(fut.result(), job))

    def _written(self, result: tuple[Ledger, tuple[int, int, int] | None] | None, job: tuple) -> None:
        self._writing = False
        if result is None:
            self._unwritten = self._unwritten.plus(job[0])  # not written: tried again with the next
        else:
            base, self._usage_sig = result
            self.ledger = base.plus(self._unwritten)
            self.recompute()
        if self._dirty:
            self.changed()

    def flush(self) -> None:
        """Write usage.json now, when something changed since it was last written."""
        if self._dirty and (self.settings is not None or self.ledger.models):
            job = self._take()
            self._written(self._write(*job), job)

    def _write(
        self, delta: Ledger, settings: Metering | None, bottle: str
    ) -> tuple[Ledger, tuple[int, int, int] | None] | None:
        """Add ``delta`` to usage.json's counts under the workers' lock (off the event loop): the
        counts written and the file's signature, or None when it could not be written."""
        try:
            os.makedirs(self.store.run_dir, mode=0o700, exist_ok=True)
            with locked(os.path.join(self.store.run_dir, workers.USAGE_LOCK)):
                try:
                    with open(self.usage_path, encoding="utf-8") as f:
                        base = Ledger.from_doc(json.load(f))
                except FileNotFoundError:
                    base = Ledger()
                except (ValueError, RecursionError):
                    base = Ledger()  # start() set a bad file aside; counting goes on from this worker's
                merged = base.plus(delta)
                write_usage(self.usage_path, self.doc(merged, settings, bottle))
                return merged, _stat_sig(self.usage_path)
        except OSError as e:
            self._warn_once(f"cannot write {self.usage_path}: {e.strerror or e}")
            return None

    # the budget ---------------------------------------------------------------------------------
    def _limits(self) -> tuple[float | None, int | None]:
        b = self.settings.budget if self.settings else None
        return (b.usd, b.tokens) if b else (None, None)

    def spent_text(self) -> str:
        """'$X of $Y' (or 'N of M tokens') for the limit that was reached."""
        usd_limit, token_limit = self._limits()
        usd, tokens, _ = self.spent
        if usd_limit is not None and (token_limit is None or usd >= usd_limit):
            return f"${usd:,.2f} of ${usd_limit:,.2f}"
        return f"{tokens:,} of {token_limit or 0:,} tokens"

    def ask(self) -> None:
        """Queue a budget proposal for the limits in force (once per set of limits, whatever egress
        restarts in between), off the event loop."""
        key = self._limits()
        if key in self.asked or self.settings is None:
            return
        usd, tokens, _ = self.spent
        usd_limit, token_limit = key
        change = {
            "usd": (usd_limit * 2 if usd_limit else 10.0) if usd_limit is not None and usd >= usd_limit else usd_limit,
            "tokens": (token_limit * 2 if token_limit else 1_000_000)
            if token_limit is not None and tokens >= token_limit
            else token_limit,
        }
        budget = {"usd": usd_limit, "tokens": token_limit, "spent_usd": round(usd, 6), "spent_tokens": tokens}
        reason = (
            f"bottle {self.settings.slug} spent {self.spent_text()}: every model call is refused until "
            "the budget is raised"
        )
        entry: dict[str, Any] = {"id": None, "status": "pending", "note": "", "checked": self.clock()}
        self.asked[key] = entry
        job = (self.settings.slug, key, change, budget, reason, entry)
        try:
            asyncio.get_running_loop().run_in_executor(None, self._queue_proposal, *job)
        except RuntimeError:
            self._queue_proposal(*job)

    def _queue(self) -> contract.Queue:
        return contract.Queue(layout.sibling_queue(self.store.state_dir))

    def _queue_proposal(
        self,
        slug: str,
        key: tuple[float | None, int | None],
        change: dict[str, Any],
        budget: dict[str, Any],
        reason: str,
        entry: dict[str, Any],
    ) -> None:
        try:
            q = self._queue()
            with q.lock():
                for p in q.all():
                    b = p.get("budget")
                    if p["kind"] == "budget" and isinstance(b, dict) and (b.get("usd"), b.get("tokens")) == key:
                        entry.update(id=p["id"], status=p["status"], note=_note(p))
                        return
                p = contract.new_proposal(slug, "budget", change, reason, budget=budget)
                q.write(p)
                entry["id"] = p["id"]
            logger.warning(f"egress: budget reached ({reason}); proposal {p['id']} asks the operator")
        except (OSError, ValueError) as e:
            self._warn_once(f"cannot queue the budget proposal: {e}")

    def answer_status(self) -> str:
        """What a refused request is told about the operator (re-reading the decision now and then)."""
        entry = self.asked.get(self._limits())
        if entry is None:
            return "the operator has been asked"
        now = self.clock()
        if entry.get("id") and now - entry.get("checked", 0) >= RECHECK_SECONDS:
            entry["checked"] = now
            try:
                asyncio.get_running_loop().run_in_executor(None, self._recheck, entry)
            except RuntimeError:
                self._recheck(entry)
        if entry.get("status") == "rejected":
            note = entry.get("note") or ""
            return "the operator declined to raise it" + (f": {note}" if note else "")
        return "the operator has been asked"

    def _recheck(self, entry: dict[str, Any]) -> None:
        try:
            p = self._queue().read(entry["id"])
        except (OSError, ValueError):
            return
        if p is not None:
            entry.update(status=p["status"], note=_note(p))


def _note(p: dict[str, Any]) -> str:
    note = str((p.get("decision") or {}).get("note") or "")
    return " ".join(note.split())[:MAX_NOTE_SHOWN]


class FlowMeter:
    """One metered answer: its usage, read from a whole body or from a stream as it passes."""

    def __init__(self, meter: Meter) -> None:
        self.meter = meter
        self.request_model: str | None = None
        self.model: str | None = None
        self.applied = dict.fromkeys((*TOKEN_KEYS, CACHE_1H), 0)
        self.counted = False
        self.failed = False
        self.status = 0
        self.sse = False
        self.streamed = False
        self.reader: SseReader | None = None
        self.body: bytearray | None = None
        self.decoder: Any = None
        self.unreadable = False
        self.malformed = 0
        self.final = False  # the answer's closing usage came (message_delta, or the whole JSON)
        self.generated = 0  # characters of generated content the stream carried

    def name(self) -> str:
        return self.model or self.request_model or UNKNOWN

    # what an answer says ------------------------------------------------------------------------
    def usage(self, model: object, usage: object) -> None:
        """A usage report: counts are cumulative within an answer (message_delta repeats and raises
        message_start's), so only what grew is added."""
        if isinstance(model, str) and model and self.model is None:
            self.model = model[:200]
        if not isinstance(usage, dict):
            return
        new: dict[str, int] = {}
        for k in TOKEN_KEYS:
            v = usage.get(k)
            if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_COUNT:
                new[k] = v
        split = usage.get("cache_creation")
        if isinstance(split, dict):
            v = split.get("ephemeral_1h_input_tokens")
            if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_COUNT:
                new[CACHE_1H] = v
        delta = {k: v - self.applied[k] for k, v in new.items() if v > self.applied[k]}
        self.applied.update({k: new[k] for k in delta})
        first, self.counted = not self.counted, True
        if delta or first:
            self.meter.add(self.name(), delta, request=first)

    def event(self, name: str, data: bytes) -> None:
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError):
            self.malformed += 1
            return
        if not isinstance(doc, dict):
            self.malformed += 1
            return
        if name == "message_start":
            msg = doc.get("message")
            if isinstance(msg, dict):
                self.usage(msg.get("model"), msg.get("usage"))
        elif name == "message_delta":
            usage = doc.get("usage")
            self.final = self.final or (isinstance(usage, dict) and "output_tokens" in usage)
            self.usage(None, usage)
        elif name == "content_block_delta":
            delta = doc.get("delta")
            if isinstance(delta, dict):
                self.generated += sum(len(v) for k, v in delta.items() if k != "type" and isinstance(v, str))
        else:
            self.failed = True  # an error event: the answer ended in an error

    def whole(self, body: bytes) -> None:
        """A whole answer's body (JSON, or an event stream that was buffered)."""
        if self.sse:
            reader = SseReader()
            for name, data in reader.feed(body + b"\n\n"):
                if name in USAGE_EVENTS:
                    self.event(name, data)
            return
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError):
            self.malformed += 1
            return
        if isinstance(doc, dict) and doc.get("type") == "message":
            self.final = True
            self.usage(doc.get("model"), doc.get("usage"))

    # a stream as it passes ------------------------------------------------------------------------
    def feed(self, chunk: bytes) -> None:
        if self.unreadable:
            return
        if self.decoder is not None:
            data = self.decoder.decompress(chunk, MAX_JSON) if chunk else self.decoder.flush()
            if self.decoder.unconsumed_tail:
                raise Unreadable("a chunk inflates past the cap")
        else:
            data = chunk
        if self.reader is not None:
            for name, payload in self.reader.feed(data):
                if name in USAGE_EVENTS:
                    self.event(name, payload)
        elif self.body is not None:
            if len(self.body) + len(data) > MAX_JSON:
                raise Unreadable("a JSON answer over the cap")
            self.body += data

    def broke(self, exc: BaseException) -> None:
        """Reading failed: the stream goes on unread (counted as such)."""
        self.unreadable = True
        self.meter._warn_once(f"a metered answer's usage could not be read ({type(exc).__name__})")

    def finish(self, *, error: bool = False) -> None:
        if self.body is not None and not self.unreadable:
            body, self.body = bytes(self.body), None
            self.whole(body)
        failed = error or self.failed or self.status >= 400
        if not self.final and self.generated:
            estimate = -(-self.generated // CHARS_PER_TOKEN)
            if estimate > self.applied["output_tokens"]:
                self.usage(None, {"output_tokens": estimate})
                self.meter._warn_once(
                    "an answer ended before its usage came: its output tokens are estimated from what streamed"
                )
        if not self.counted:
            self.counted = True
            self.meter.add(self.name(), {}, request=True, error=failed)
        elif failed:
            self.meter.add(self.name(), {}, error=True)
        if self.unreadable:
            self.meter.unread()
        self.meter.changed(soon=True)  # the other workers see this answer's cost before their next call


class MeteredStream:
    """``flow.response.stream``: hands each chunk on exactly as the stream before it would (the
    scrubber's, or the chunk itself), and reads a copy of the upstream's chunk for its usage.
    Whatever reading does, the chunks pass: it never raises and never holds a byte back."""

    __slots__ = ("inner", "flow_meter")

    def __init__(self, inner: Callable[[bytes], Any] | None, flow_meter: FlowMeter) -> None:
        self.inner = inner
        self.flow_meter = flow_meter

    def __call__(self, chunk: bytes) -> Any:
        out = self.inner(chunk) if self.inner is not None else ([chunk] if chunk else [])
        fm = self.flow_meter
        if not fm.unreadable:
            try:
                fm.feed(chunk)
            except Exception as e:
                fm.broke(e)
        return out


class BudgetGate:
    """The request side: which flows are metered, and the 429 once the budget is reached."""

    def __init__(self, meter: Meter, store: PolicyStore, log: DecisionLog) -> None:
        self.meter = meter
        self.store = store
        self.log = log

    def running(self) -> None:
        self.meter.start()

    def done(self) -> None:
        self.meter._dirty = True  # whatever a write in flight had: the last word is this one
        self.meter.flush()

    @guarded("budget", REQUEST)
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        pending = self.store.pending.get(flow.id)
        req = flow.request
        if pending is None or self.store.policy is None or req.method.upper() != "POST":
            return
        meter = self.meter
        if not meter.started:
            meter.start()
        meter.reload()
        # Which endpoint: as the most lenient server routes the path (//v1/%6Dessages/ included).
        messages, endpoint = is_messages_request(req.method, req.path), routed_path(req.path)
        if meter.settings is None:
            if meter.error is not None and messages:
                reason = f"the bottle's metering settings cannot be read ({meter.error})"
                return self._answer(
                    flow, pending, 503, "api_error", f"egress: {reason}; model calls wait for the operator", reason
                )
            return
        # Metered by the host the request reaches, or by its route's pattern: a wildcard route
        # over a metered host (*.anthropic.com) is no way around the meter.
        host = normalize_host(req.host)
        if (
            meter.settings.api_of(host) is None
            and meter.settings.api_of(self.store.policy.routes[pending.route].host) is None
        ):
            return
        if not messages:
            if meter.settings.budget is not None and endpoint not in FREE_POSTS:
                message = (
                    f"budget: POST {endpoint[:120]} on {host} is not a call egress can count toward bottle "
                    f"{meter.settings.slug}'s budget; under a budget, model calls go to {MESSAGES}"
                )
                reason = f"an uncounted POST {endpoint[:120]} under a budget"
                return self._answer(flow, pending, 403, "permission_error", message, reason)
            return
        # An answer egress can read as it passes: the upstream is asked not to compress it.
        req.headers["accept-encoding"] = "identity"
        meter.flows[flow.id] = FlowMeter(meter) if endpoint == MESSAGES else None

    @guarded("budget", REQUEST)
    def request(self, flow: http.HTTPFlow) -> None:
        if flow.id not in self.meter.flows:
            return
        if flow.response is not None or flow.error is not None or flow.id in self.store.refusals:
            self.meter.flows.pop(flow.id, None)
            return
        pending = self.store.pending.get(flow.id)
        fm = self.meter.flows[flow.id]
        if fm is not None and pending is not None:
            fm.request_model = pending.model
        if pending is None:
            return
        meter = self.meter
        meter.sync()  # what the other workers counted
        budget = meter.settings.budget if meter.settings else None
        if budget is not None and meter.settings is not None and routed_path(flow.request.path) == BATCHES:
            # A batch's usage comes with its results, long after: no budget could hold it.
            self.meter.flows.pop(flow.id, None)
            message = (
                f"budget: message batches are not available to bottle {meter.settings.slug}, whose model calls "
                "have a budget (a batch's cost is known only when its results come); send the requests one by one"
            )
            return self._answer(flow, pending, 403, "permission_error", message, "a message batch under a budget")
        if budget is not None and budget.usd is not None and budget.tokens is None and meter.settings is not None:
            model = pending.model
            if model and price_of(meter.settings.prices, model) is None:
                # Its cost could not count toward a dollar budget: the budget would not hold.
                self.meter.flows.pop(flow.id, None)
                reason = f"model {model[:80]} has no price, and the bottle's budget is in dollars"
                message = (
                    f"budget: model {model[:80]} has no price for bottle {meter.settings.slug}, so its cost cannot count "
                    f"toward the ${budget.usd:,.2f} budget; the operator can add its price (config.yaml prices) or set a tokens budget"
                )
                return self._answer(flow, pending, 403, "permission_error", message, reason)
        if meter.level != "reached":
            return
        self.meter.flows.pop(flow.id, None)
        slug = meter.settings.slug if meter.settings else self.store.bottle
        message = f"budget: spent {meter.spent_text()} for bottle {slug}; {meter.answer_status()}"
        self._answer(flow, pending, 429, "rate_limit_error", message, f"budget reached: spent {meter.spent_text()}")

    def _answer(self, flow: http.HTTPFlow, pending: Any, status: int, kind: str, message: str, reason: str) -> None:
        body = json.dumps({"type": "error", "error": {"type": kind, "message": message}})
        self.log.block(
            flow,
            reason,
            body + "\n",
            pending.fields,
            status=status,
            decision="budget",
            route=pending.route,
            body_read=True,
            content_type="application/json",
            # The Anthropic SDKs retry a 429 unless told not to: the answer would not change.
            headers={"x-should-retry": "false"},
            budget={"level": self.meter.level, "at": now_iso()},
        )


class UsageMeter:
    """The response side: each metered answer's usage, whole or as it streams (never cutting it)."""

    def __init__(self, meter: Meter) -> None:
        self.meter = meter

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        fm = self.meter.flows.get(flow.id)
        resp = flow.response
        if fm is None or resp is None:
            return
        try:
            fm.status = resp.status_code
            fm.sse = resp.headers.get("content-type", "").lower().startswith("text/event-stream")
            if not resp.stream or fm.status >= 400:
                return  # read whole in response() (an error's body is not a usage report)
            fm.streamed = True
            fm.reader = SseReader() if fm.sse else None
            fm.body = None if fm.sse else bytearray()
            fm.decoder = _decoder(resp.headers.get("content-encoding", ""))
            inner = resp.stream if callable(resp.stream) else None
            resp.stream = MeteredStream(inner, fm)
        except Exception as e:
            fm.broke(e)

    def response(self, flow: http.HTTPFlow) -> None:
        fm = self.meter.flows.pop(flow.id, None)
        if fm is None or fm.status == 0:
            return  # no answer came from upstream: egress answered (a later check refused it)
        try:
            if not fm.streamed and not fm.unreadable and fm.status < 400 and flow.response is not None:
                fm.whole(decode_all(flow.response))
        except Exception as e:
            fm.broke(e)
        fm.finish()

    def error(self, flow: http.HTTPFlow) -> None:
        fm = self.meter.flows.pop(flow.id, None)
        if fm is not None:
            fm.finish(error=True)
