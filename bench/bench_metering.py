"""Metering's cost (issue 19): time to first byte of a streamed Messages API answer through a real
egress (mitmdump with the bottle's addon, as daemons.json runs it) with and without metering
[target: no measurable difference, under 0.5 ms added], the whole answer's time, and what
reading one answer's usage costs in-process (a long stream, event by event and in 16 KB chunks,
and a JSON body). Prints figures; asserts nothing about time.

Everything runs on loopback: the upstream is the tests' fake Messages API
(tests/integration/fake_messages_api.py), the route injects a credential as a route to the
Anthropic API does, and the two variants are measured interleaved in one run (metering.json
names the route's host as metered, or names no host), so both see the same machine load.
"""

from __future__ import annotations

import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bottle_contract.usage import Metered, Metering, default_prices, write_metering  # noqa: E402
from tests.support.egress import free_port, route_line, routes_yaml, start_mitmdump, stop_mitmdump  # noqa: E402
from tests.support.sidecars import egress_module  # noqa: E402

FAKE = ROOT / "tests" / "integration" / "fake_messages_api.py"
sys.path.insert(0, str(FAKE.parent))
import fake_messages_api  # noqa: E402

ROUNDS = 8  # blocks per variant, interleaved
PER_BLOCK = 40  # streamed answers per block
DELTAS = 300  # text deltas in each answer (a long answer: ~330 events)
AUTH = "{scheme: header, header: x-api-key, token_env: ANTHROPIC_API_KEY}"
NO_BODY_DLP = "{body: false, disabled_rules: [], max_body_bytes: 8388608}"


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def one_answer(port: int, up: int) -> tuple[float, float]:
    """(ms to the first byte of message_start, ms to message_stop) of one streamed answer."""
    body = json.dumps({"model": "claude-sonnet-4-5", "messages": [], "stream": True}).encode()
    head = (
        f"POST http://127.0.0.1:{up}/v1/messages HTTP/1.1\r\nHost: 127.0.0.1:{up}\r\nx-api-key: placeholder\r\n"
        f"content-type: application/json\r\nx-fake-deltas: {DELTAS}\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as c:
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t0 = time.perf_counter()
        c.sendall(head + body)
        got = b""
        while b"event: message_start" not in got:
            data = c.recv(65536)
            if not data:
                raise SystemExit(f"the answer ended early: {got[:300]!r}")
            got += data
        first = time.perf_counter()
        tail = got[-64:]
        while b"event: message_stop" not in tail:
            data = c.recv(65536)
            if not data:
                raise SystemExit("the stream ended before message_stop")
            tail = tail[-64:] + data
        end = time.perf_counter()
    return (first - t0) * 1000, (end - t0) * 1000


def through_egress() -> dict[str, dict[str, list[float]]]:
    work = Path(tempfile.mkdtemp(prefix="bottle-bench-metering-"))
    up = free_port()
    fake = subprocess.Popen([sys.executable, str(FAKE), str(up)])
    metered = Metering(slug="bench", metered=(Metered("127.0.0.1", "anthropic"),), prices=default_prices())
    plain = Metering(slug="bench", metered=(), prices=default_prices())
    out: dict[str, dict[str, list[float]]] = {v: {"ttfb": [], "total": []} for v in ("plain", "metered")}
    try:
        (work / "routes.yaml").write_text(
            routes_yaml(route_line("127.0.0.1", up, scheme="http", auth=AUTH, dlp=NO_BODY_DLP))
        )
        write_metering(work / "metering.json", plain)
        proc, port = start_mitmdump(work, {"ANTHROPIC_API_KEY": "sk-ant-bench-0123456789abcdef"})
        try:
            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", up), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.05)
            for _ in range(10):
                one_answer(port, up)  # warm up
            for _ in range(ROUNDS):
                for variant, settings in (("plain", plain), ("metered", metered)):
                    write_metering(work / "metering.json", settings)
                    one_answer(port, up)  # egress reloads metering.json at this one
                    for _ in range(PER_BLOCK):
                        ttfb, total = one_answer(port, up)
                        out[variant]["ttfb"].append(ttfb)
                        out[variant]["total"].append(total)
        finally:
            stop_mitmdump(proc)
        usage = json.loads((work / "usage.json").read_text())
        counted = usage["totals"]["requests"]
        expected = ROUNDS * (PER_BLOCK + 1)
        print(
            f"usage.json counted {counted} metered answers (expected {expected}), {usage['totals']['output_tokens']} output tokens"
        )
    finally:
        fake.terminate()
        fake.wait()
    return out


def in_process() -> None:
    metering = egress_module("metering")
    sse = egress_module("sse")
    store = egress_module("policy_store").PolicyStore(tempfile.mkdtemp(), {}, None, None, frozenset())
    meter = metering.Meter(store)
    meter.settings = Metering(slug="bench", prices=default_prices())
    meter.changed = lambda: None  # the write to usage.json happens off the loop in egress
    stream = b"".join(
        f"event: {n}\ndata: {json.dumps(d)}\n\n".encode()
        for n, d in fake_messages_api.events("claude-sonnet-4-5", 0, DELTAS)
    )
    by_event = [e + b"\n\n" for e in stream.split(b"\n\n") if e]
    by_16k = [stream[i : i + 16384] for i in range(0, len(stream), 16384)]

    def run(chunks: list[bytes], metered: bool) -> float:
        t0 = time.perf_counter()
        if metered:
            fm = metering.FlowMeter(meter)
            fm.status, fm.sse, fm.streamed, fm.reader = 200, True, True, sse.SseReader()
            s = metering.MeteredStream(None, fm)
            for c in chunks:
                s(c)
            s(b"")
            fm.finish()
        else:
            for c in chunks:
                _ = [c] if c else []
        return (time.perf_counter() - t0) * 1e6

    for label, chunks in (
        (f"event by event ({len(by_event)} chunks)", by_event),
        (f"in 16 KB chunks ({len(by_16k)})", by_16k),
    ):
        base = statistics.median(run(chunks, False) for _ in range(200))
        cost = statistics.median(run(chunks, True) for _ in range(200))
        print(
            f"metering one streamed answer of {len(stream) // 1024} KB, {label}: {cost:.0f} us "
            f"(pass-through alone {base:.0f} us; {(cost - base) / len(chunks):.1f} us per chunk)"
        )

    def first_chunk() -> float:
        fm = metering.FlowMeter(meter)
        fm.status, fm.sse, fm.streamed, fm.reader = 200, True, True, sse.SseReader()
        s = metering.MeteredStream(None, fm)
        t0 = time.perf_counter()
        s(by_event[0])
        return (time.perf_counter() - t0) * 1e6

    print(
        f"metering's work before the first chunk (message_start) leaves: {statistics.median(first_chunk() for _ in range(2000)):.1f} us "
        "(what metering adds to the time to first byte, measured where it happens)"
    )
    doc = json.dumps(
        {
            "type": "message",
            "model": "claude-sonnet-4-5",
            "content": [{"type": "text", "text": "x" * 4000}],
            "usage": fake_messages_api.USAGE,
        }
    ).encode()

    def whole() -> float:
        t0 = time.perf_counter()
        fm = metering.FlowMeter(meter)
        fm.status = 200
        fm.whole(doc)
        fm.finish()
        return (time.perf_counter() - t0) * 1e6

    print(f"metering one JSON answer of {len(doc) // 1024} KB: {statistics.median(whole() for _ in range(500)):.0f} us")


def main() -> None:
    in_process()
    figures = through_egress()
    p, m = figures["plain"], figures["metered"]
    for key, label in (("ttfb", "time to first byte (message_start)"), ("total", f"whole answer ({DELTAS} deltas)")):
        pm, mm = statistics.median(p[key]), statistics.median(m[key])
        print(
            f"streamed answer through egress, {label}: without metering median {pm:.2f} ms (p90 {pct(p[key], 90):.2f}); "
            f"with metering median {mm:.2f} ms (p90 {pct(m[key], 90):.2f}); added median {mm - pm:+.2f} ms"
            + ("  [target: under 0.5 ms added]" if key == "ttfb" else "")
        )
    print(f"({len(p['ttfb'])} answers per variant, interleaved in blocks of {PER_BLOCK}, one mitmdump, loopback)")


if __name__ == "__main__":
    main()
