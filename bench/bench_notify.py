"""Notification figures (issue 19): what `Notifier.emit` costs the console's event loop (target:
a few microseconds, whatever the sinks do), with a healthy webhook and with one that never answers;
event -> webhook request on loopback (coalescing off); and a burst of 50 drafts -> messages sent.
The receiver is a local HTTP server (tests/support/webhooks.py); nothing leaves the machine."""

from __future__ import annotations

import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bottle_tui.config import NotifySettings  # noqa: E402
from bottle_tui.notify import Event, Notifier, WebhookSink  # noqa: E402
from tests.support.webhooks import Receiver  # noqa: E402

EMITS = 20_000


def emit_cost(receiver: Receiver, label: str) -> None:
    settings = NotifySettings(coalesce_seconds=0.2, max_per_minute=6.0)
    n = Notifier(settings, [WebhookSink("BENCH_HOOK", receiver.url, "slack", timeout=30)], on_problem=lambda _: None)
    n.start()
    samples = []
    try:
        for i in range(EMITS):
            t = time.perf_counter_ns()
            n.emit(Event("proposal", "bench-aaaaaa", f"draft: egress-route GET h{i}.example:443"))
            samples.append(time.perf_counter_ns() - t)
    finally:
        n.close()
    samples.sort()
    p99 = samples[int(len(samples) * 0.99)]
    print(
        f"notify: emit() with {label}: median {statistics.median(samples) / 1000:.1f} µs, "
        f"p99 {p99 / 1000:.1f} µs, max {samples[-1] / 1000:.0f} µs (n={EMITS})"
    )


def latency(receiver: Receiver) -> None:
    settings = NotifySettings(coalesce_seconds=0.0, max_per_minute=60_000.0)
    n = Notifier(settings, [WebhookSink("BENCH_HOOK", receiver.url, "json")], on_problem=lambda _: None).start()
    samples = []
    try:
        for i in range(50):
            before = len(receiver.received)
            t = time.monotonic()
            n.emit(Event("waiting", f"bench-{i:06d}", "waiting for input"))
            got = receiver.wait_for(before + 1)
            samples.append((got[-1].at - t) * 1000)
    finally:
        n.close()
    print(
        f"notify: event -> webhook request on loopback (no coalescing window): median {statistics.median(samples):.1f} ms "
        f"(min {min(samples):.1f}, max {max(samples):.1f}, n={len(samples)})"
    )


def burst(receiver: Receiver) -> None:
    n = Notifier(NotifySettings(), [WebhookSink("BENCH_HOOK", receiver.url, "json")], on_problem=lambda _: None)
    n.start()
    before = len(receiver.received)
    t = time.monotonic()
    try:
        for i in range(50):
            n.emit(Event("proposal", "bench-aaaaaa", f"draft: egress-route GET h{i}.example:443"))
        n.flush(30)
    finally:
        n.close()
    sent = receiver.received[before:]
    print(
        f"notify: a burst of 50 drafts (shipped settings: 3 s window, 6 a minute) -> {len(sent)} message(s), "
        f"{sent[0].json()['count'] if sent else 0} events in the first, sent {sent[0].at - t:.2f} s after the first draft"
    )


def main() -> None:
    healthy = Receiver().start()
    stuck = Receiver(delay=3600.0).start()  # accepts, never answers
    try:
        emit_cost(healthy, "a healthy webhook")
        emit_cost(stuck, "a webhook that never answers")
        latency(healthy)
        burst(healthy)
    finally:
        healthy.stop()
        threading.Thread(target=stuck.stop, daemon=True).start()  # its handler sleeps on


if __name__ == "__main__":
    main()
