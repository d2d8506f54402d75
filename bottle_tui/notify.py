"""Notifications away from the terminal: what the console alerts on (a new proposal, an agent
waiting for input, a budget at 80% or reached, a bottle whose agent or bundle died) also goes to
the sinks ``config.yaml``'s ``notify`` turns on: a desktop notification through the terminal
(OSC 9 / OSC 777, passed through tmux), a command (the message as JSON on stdin), webhooks
(json, slack, ntfy; each URL named by an environment variable).

``Notifier.emit`` never blocks: events wait in a bounded buffer; one thread coalesces a burst
into one message (``digest``) and holds to ``max_per_minute`` (``TokenBucket``); each sink has its
own thread and bounded queue, so a slow or failing sink delays nobody. A failing webhook is
retried with backoff (``backoff_delays``) and reported once until it works again. Everything
sent is made inert first (``bottle_tui.inert``): agent text carries no terminal escape and no
Slack markup or mention.
"""

from __future__ import annotations

import ipaddress
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from queue import Empty, Full, Queue
from typing import Any, Protocol

from .config import NotifySettings
from .errors import BottleError
from .inert import inert_text
from .runner import run_blocking

EVENT_LABELS = {  # kind -> (title of one, what many are called)
    "proposal": ("New proposal", "new proposals"),
    "waiting": ("Waiting for input", "agents waiting for input"),
    "budget": ("Budget", "budget alerts"),
    "died": ("Bottle died", "bottles whose agent or bundle died"),
}
BUDGET_LEVELS = ("ok", "warn", "reached")
MAX_TEXT = 1000  # characters of a message's text; the JSON format also lists up to MAX_EVENTS events
MAX_EVENTS = 100
BUFFER = 1000  # events waiting for the coalescer; beyond it they are counted as dropped
SINK_QUEUE = 8  # messages waiting for one sink; beyond it they are counted as dropped
WEBHOOK_TIMEOUT = 10.0
RETRIES = 4  # a failing webhook is tried 1 + RETRIES times, BACKOFF_BASE * 2**n s apart (capped)
BACKOFF_BASE = 1.0
BACKOFF_CAP = 30.0

Problem = Callable[[str], None]  # one line for the operator (the console shows it as a toast)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Event:
    """Something the operator should hear about. ``text`` may hold agent-derived text: it is
    made inert where it is sent, not here."""

    kind: str  # one of EVENT_LABELS
    slug: str
    text: str
    level: str = ""  # budget: warn | reached
    at: str = field(default_factory=_now)

    def to_json(self) -> dict[str, str]:
        out = {"kind": self.kind, "bottle": inert_text(self.slug), "text": inert_text(self.text), "at": self.at}
        if self.level:
            out["level"] = self.level
        return out


@dataclass(frozen=True)
class Message:
    """What one send carries: one event, or the digest of a burst (already inert)."""

    title: str
    text: str
    events: tuple[Event, ...]
    dropped: int = 0  # events lost to a full buffer or sink queue before this message

    @property
    def urgent(self) -> bool:
        return any(e.kind == "died" or e.level == "reached" for e in self.events)

    def to_json(self) -> dict[str, Any]:
        return {
            "source": "bottle-tui",
            "title": self.title,
            "text": self.text,
            "count": len(self.events),
            "events": [e.to_json() for e in self.events[:MAX_EVENTS]],
            "dropped": self.dropped,
        }


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def digest(events: Sequence[Event], dropped: int = 0) -> Message:
    """One message for a burst: a single event says itself; many are counted by kind, with the
    bottles they came from (a burst of 50 drafts is one line)."""
    if not events:
        raise ValueError("digest of no events")
    if len(events) == 1:
        e = events[0]
        title, text = f"bottle-tui: {EVENT_LABELS[e.kind][0]}", f"{e.slug}: {e.text}"
    else:
        parts = []
        for kind in EVENT_LABELS:
            of_kind = [e for e in events if e.kind == kind]
            if not of_kind:
                continue
            slugs = Counter(e.slug for e in of_kind)
            named = ", ".join(f"{s} x{n}" if n > 1 else s for s, n in slugs.most_common(5))
            more = f" and {len(slugs) - 5} more" if len(slugs) > 5 else ""
            parts.append(f"{len(of_kind)} {EVENT_LABELS[kind][1]} ({named}{more})")
        title, text = f"bottle-tui: {len(events)} events", "; ".join(parts)
    if dropped:
        text += f" (+{dropped} earlier events not delivered)"
    return Message(inert_text(title), _clip(inert_text(text), MAX_TEXT), tuple(events), dropped)


class TokenBucket:
    """At most ``per_minute`` messages a minute, the first ``burst`` of them at once."""

    def __init__(self, per_minute: float, burst: int = 1) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp: float | None = None

    def _fill(self, now: float) -> None:
        if self.stamp is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def delay(self, now: float) -> float:
        """Seconds until a message may go (0: now)."""
        self._fill(now)
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / self.rate

    def take(self, now: float) -> None:
        self._fill(now)
        self.tokens -= 1.0


def backoff_delays(retries: int = RETRIES, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP) -> list[float]:
    """The waits before each retry: base, 2 base, 4 base, ... each at most ``cap``."""
    return [min(cap, base * 2**n) for n in range(retries)]


# -- the formats (pure: what each sink sends) ------------------------------------------------------


def slack_escape(text: str) -> str:
    """Text Slack shows literally: &, < and > escaped as Slack requires (so no <url|label> link,
    no <!channel>), and @ as a full-width ＠ so no @channel, @here or @someone mention fires."""
    clean = inert_text(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return clean.replace("@", "\uff20")


def render(fmt: str, message: Message) -> tuple[bytes, dict[str, str]]:
    """The body and headers a webhook of format ``fmt`` (json, slack, ntfy) is sent."""
    if fmt == "json":
        return json.dumps(message.to_json()).encode(), {"Content-Type": "application/json"}
    if fmt == "slack":
        # mrkdwn off: *bold*, _italic_ and `code` in agent text stay characters; no link unfurls.
        body = {
            "text": slack_escape(f"{message.title}: {message.text}"),
            "mrkdwn": False,
            "unfurl_links": False,
            "unfurl_media": False,
        }
        return json.dumps(body).encode(), {"Content-Type": "application/json"}
    if fmt == "ntfy":
        # ntfy shows a plain-text body as it is (Markdown only when asked for). The title travels in
        # a header: it is ours, never the agent's, and ASCII with no CR or LF to split headers.
        headers = {
            "Title": inert_text(message.title).encode("ascii", "replace").decode(),
            "Priority": "high" if message.urgent else "default",
            "Tags": "bottle",
            "Content-Type": "text/plain; charset=utf-8",
        }
        return inert_text(message.text).encode(), headers
    raise ValueError(f"unknown webhook format {fmt!r}")


def osc(message: Message, mode: str, *, tmux: bool = False) -> str:
    """The terminal's desktop notification: OSC 9 (iTerm2, WezTerm, kitty, Ghostty...) and/or
    OSC 777 (foot, urxvt, VTE...), wrapped in tmux's DCS passthrough when inside tmux (which
    forwards it only with ``allow-passthrough on``). The payload is inert and has no ``;`` where
    OSC 777 splits its fields, so no text can end the sequence or start another."""
    title = _clip(inert_text(message.title).replace(";", ","), 80)
    body = _clip(inert_text(message.text), 240)
    seqs = []
    if mode in ("osc9", "both"):
        # "bottle-tui:" first: a payload beginning "4;" would be ConEmu's progress bar.
        seqs.append(f"\x1b]9;{title}: {body}\x07")
    if mode in ("osc777", "both"):
        seqs.append(f"\x1b]777;notify;{title};{body.replace(';', ',')}\x07")
    if tmux:
        seqs = [f"\x1bPtmux;{s.replace(chr(27), chr(27) * 2)}\x1b\\" for s in seqs]
    return "".join(seqs)


# -- the sinks -------------------------------------------------------------------------------------


class SendError(Exception):
    """A send failed; the text is one line that names the sink but never a secret (a URL)."""


class Sink(Protocol):
    @property
    def name(self) -> str: ...  # names the sink in reports; never a secret

    @property
    def retries(self) -> int: ...

    def send(self, message: Message) -> None: ...


@dataclass
class TerminalSink:
    """Writes the OSC sequence through ``write`` (the console hands it to its own terminal driver,
    so it never interleaves with a frame being drawn)."""

    write: Callable[[str], None]
    mode: str
    tmux: bool = False
    name: str = "terminal"
    retries: int = 0

    def send(self, message: Message) -> None:
        self.write(osc(message, self.mode, tmux=self.tmux))


@dataclass
class CommandSink:
    argv: tuple[str, ...]
    timeout: float
    retries: int = 0

    @property
    def name(self) -> str:
        return f"command {inert_text(self.argv[0])}"

    def send(self, message: Message) -> None:
        try:
            run_blocking(self.argv, input=json.dumps(message.to_json()).encode(), timeout=self.timeout)
        except BottleError as exc:
            raise SendError(" ".join(str(exc).split())[:300]) from None


@dataclass
class WebhookSink:
    env: str  # the variable the URL came from: what reports name
    url: str = field(repr=False)
    format: str
    timeout: float = WEBHOOK_TIMEOUT
    retries: int = RETRIES

    @property
    def name(self) -> str:
        return f"webhook ${self.env} ({self.format})"

    def send(self, message: Message) -> None:
        import urllib.error  # here, in the sink's thread: the console's first frame goes without
        import urllib.parse
        import urllib.request

        body, headers = render(self.format, message)
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        # The environment's proxy (HTTPS_PROXY...) is used, except for a receiver on this machine.
        host = urllib.parse.urlsplit(self.url).hostname or ""
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}) if is_loopback(host) else urllib.request.ProxyHandler()
        )
        try:
            with opener.open(request, timeout=self.timeout) as response:
                response.read(4096)
        except urllib.error.HTTPError as exc:
            raise SendError(f"HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise SendError(f"{type(reason).__name__}: {reason}"[:200]) from None


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine's loopback."""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_sinks(
    settings: NotifySettings,
    env: Mapping[str, str],
    *,
    terminal_write: Callable[[str], None] | None = None,
    tmux: bool = False,
) -> tuple[list[Sink], list[str]]:
    """The sinks the settings turn on, and one line for each that cannot be (a webhook whose
    variable is unset or holds no http(s) URL; a terminal sink with no terminal)."""
    sinks: list[Sink] = []
    problems: list[str] = []
    if settings.terminal:
        if terminal_write is None:
            problems.append("notify.terminal: no terminal here (a headless watch): terminal notifications are off")
        else:
            sinks.append(TerminalSink(terminal_write, settings.terminal, tmux))
    if settings.command:
        sinks.append(CommandSink(settings.command, settings.command_timeout))
    for i, hook in enumerate(settings.webhooks):
        url = env.get(hook.url_env, "").strip()
        if not url:
            problems.append(f"notify.webhooks[{i}]: ${hook.url_env} is not set: that webhook is off")
        elif not url.startswith(("https://", "http://")):
            problems.append(f"notify.webhooks[{i}]: ${hook.url_env} does not hold an http(s) URL: that webhook is off")
        else:
            sinks.append(WebhookSink(hook.url_env, url, hook.format))
    return sinks, problems


class SinkWorker:
    """One sink's thread: sends what the coalescer hands it, in order, retrying with backoff;
    reports a failure once (not again until a send has worked)."""

    def __init__(
        self, sink: Sink, on_problem: Problem, stop: threading.Event, delays: Sequence[float] | None = None
    ) -> None:
        self.sink, self.on_problem, self.stop = sink, on_problem, stop
        self.delays = list(backoff_delays(sink.retries) if delays is None else delays)
        self.queue: Queue[Message] = Queue(SINK_QUEUE)
        self.dropped = 0
        self.failing = False
        self.sent = 0
        self.thread = threading.Thread(target=self._run, name=f"notify {sink.name}", daemon=True)

    def offer(self, message: Message) -> None:
        try:
            self.queue.put_nowait(message)
        except Full:
            self.dropped += len(message.events)  # this sink is stuck: its next message says how many it lost

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                message = self.queue.get(timeout=0.2)
            except Empty:
                continue
            if self.dropped:
                message, self.dropped = digest(message.events, message.dropped + self.dropped), 0
            self._deliver(message)
            self.queue.task_done()

    def _deliver(self, message: Message) -> None:
        error = ""
        for wait in [0.0, *self.delays]:
            if wait and self.stop.wait(wait):
                return
            try:
                self.sink.send(message)
            except SendError as exc:
                error = str(exc)
                continue
            except Exception as exc:  # a sink's bug must not end its thread
                error = f"{type(exc).__name__}: {exc}"
                continue
            self.failing = False
            self.sent += 1
            return
        if not self.failing:
            self.failing = True
            tries = 1 + len(self.delays)
            self.on_problem(
                f"notify: {self.sink.name} failed ({inert_text(error)}) after {tries} tr{'ies' if tries > 1 else 'y'}; "
                "further failures are not reported until it works again"
            )


class Notifier:
    """Events in, coalesced and rate-limited messages out to every sink; ``emit`` never blocks."""

    def __init__(
        self,
        settings: NotifySettings,
        sinks: Sequence[Sink],
        *,
        on_problem: Problem,
        clock: Callable[[], float] = time.monotonic,
        delays: Sequence[float] | None = None,
    ) -> None:
        self.settings, self.clock = settings, clock
        self.stop = threading.Event()
        self.workers = [SinkWorker(s, on_problem, self.stop, delays) for s in sinks]
        self.bucket = TokenBucket(settings.max_per_minute)
        self._events: list[Event] = []
        self._dropped = 0
        self._cond = threading.Condition()
        self._busy = False  # the coalescer holds a batch it has not handed on yet
        self._thread = threading.Thread(target=self._run, name="notify coalescer", daemon=True)

    def start(self) -> Notifier:
        for w in self.workers:
            w.thread.start()
        self._thread.start()
        return self

    def emit(self, event: Event) -> None:
        if event.kind not in self.settings.events or not self.workers:
            return
        with self._cond:
            if len(self._events) >= BUFFER:
                self._dropped += 1
            else:
                self._events.append(event)
            self._cond.notify()

    def close(self) -> None:
        self.stop.set()
        with self._cond:
            self._cond.notify()

    def idle(self) -> bool:
        """Nothing waits to be coalesced or sent (for `notify --test` and the tests)."""
        with self._cond:
            waiting = bool(self._events) or self._busy
        return not waiting and all(w.queue.unfinished_tasks == 0 for w in self.workers)

    def flush(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.idle():
                return True
            time.sleep(0.02)
        return self.idle()

    def _run(self) -> None:
        while not self.stop.is_set():
            with self._cond:
                while not self._events and not self.stop.is_set():
                    self._cond.wait()
                self._busy = True
            # The window: what arrives within coalesce_seconds of the first event joins it; while
            # the rate limit holds the batch back, later events join it too.
            if self.stop.wait(self.settings.coalesce_seconds):
                return
            while (wait := self.bucket.delay(self.clock())) > 0:
                if self.stop.wait(wait):
                    return
            self.bucket.take(self.clock())
            with self._cond:
                batch, dropped = self._events, self._dropped
                self._events, self._dropped = [], 0
            message = digest(batch, dropped)
            for w in self.workers:
                w.offer(message)
            with self._cond:
                self._busy = False


def budget_text(budget: Mapping[str, Any]) -> str:
    """'budget at 80%: spent $4.12 of $5.00' or 'budget reached: spent 1200000 of 1000000 tokens'."""
    head = "budget reached" if budget.get("level") == "reached" else "budget at 80%"
    usd, tokens = budget.get("usd"), budget.get("tokens")
    if isinstance(usd, (int, float)) and not isinstance(usd, bool):
        return f"{head}: spent ${float(budget.get('spent_usd') or 0):.2f} of ${float(usd):.2f}"
    if isinstance(tokens, int) and not isinstance(tokens, bool):
        return f"{head}: spent {int(budget.get('spent_tokens') or 0)} of {tokens} tokens"
    return head
