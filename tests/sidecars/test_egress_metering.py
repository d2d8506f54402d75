"""Metering in egress (issue 19, items 1 and 3): the event-stream reader and the per-answer meter
take a stream cut anywhere and garbage in it without raising or holding a byte back; the usage of
JSON and streamed answers is counted per model with cache tokens and priced (an unknown model is
counted, never priced); a reached budget answers the next request with a 429 in the API's error
shape and queues one budget proposal, and a raised budget reopens. In-process, and through a real
mitmdump in front of the fake Messages API (whose stream arrives event by event)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bottle_contract import proposal as contract
from bottle_contract.usage import (
    DEFAULT_PRICES,
    Budget,
    Ledger,
    Metered,
    Metering,
    default_prices,
    price_of,
    read_usage,
    write_metering,
)
from tests.support.egress import (
    decisions,
    driven_egress,
    free_port,
    make_flow,
    route_line,
    routes_yaml,
    send,
    start_mitmdump,
    stop_mitmdump,
)
from tests.support.sidecars import egress_module

sse = egress_module("sse")
metering = egress_module("metering")
FAKE = Path(__file__).resolve().parents[1] / "integration" / "fake_messages_api.py"
sys.path.insert(0, str(FAKE.parent))
import fake_messages_api  # noqa: E402

USAGE = fake_messages_api.USAGE
MODEL = "claude-sonnet-4-5-20250929"
NO_BODY_DLP = "{body: false, disabled_rules: [], max_body_bytes: 8388608}"
AUTH = "{scheme: header, header: x-api-key, token_env: ANTHROPIC_API_KEY}"
KEY = "sk-ant-real-0123456789abcdef"


def stream_bytes(model: str = MODEL) -> bytes:
    return b"".join(
        f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in fake_messages_api.events(model)
    )


def one_answer_cost() -> float:
    p = default_prices()["claude-sonnet-4-5"]
    return (
        USAGE["input_tokens"] * p.input
        + USAGE["output_tokens"] * p.output
        + USAGE["cache_creation"]["ephemeral_5m_input_tokens"] * p.cache_write_5m
        + USAGE["cache_creation"]["ephemeral_1h_input_tokens"] * p.cache_write_1h
        + USAGE["cache_read_input_tokens"] * p.cache_read
    ) / 1e6


# --- the event-stream reader ----------------------------------------------------------------------


def read_all(chunks: list[bytes]) -> list[tuple[str, bytes]]:
    r = sse.SseReader()
    out = []
    for c in chunks:
        out += list(r.feed(c))
    return out


def test_events_split_across_chunks_and_line_endings() -> None:
    body = b"event: a\r\ndata: 1\r\n\r\n: comment\nevent: b\rdata: x\rdata: y\r\r" + b"data: plain\n\n"
    want = [("a", b"1"), ("b", b"x\ny"), ("message", b"plain")]
    assert read_all([body]) == want
    assert read_all([bytes([b]) for b in body]) == want


@given(st.lists(st.integers(min_value=0, max_value=3000), max_size=12))
@settings(max_examples=150, deadline=None)
def test_any_cut_of_a_real_stream_gives_the_same_events(cuts: list[int]) -> None:
    body = stream_bytes().replace(b"\n", b"\r\n") if len(cuts) % 2 else stream_bytes()
    points = sorted({min(c, len(body)) for c in cuts})
    chunks = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]
    assert [n for n, _ in read_all(chunks)] == [n for n, _ in fake_messages_api.events(MODEL)]


def test_an_event_over_the_cap_is_dropped_and_the_next_one_read() -> None:
    r = sse.SseReader(max_event=100)
    got = list(r.feed(b"data: " + b"x" * 500 + b"\n\nevent: ok\ndata: 1\n\n"))
    assert got == [("ok", b"1")] and r.dropped == 1


# --- one answer, as it streams ---------------------------------------------------------------------


@pytest.fixture
def meter(tmp_path):
    store = egress_module("policy_store").PolicyStore(str(tmp_path), {}, None, None, frozenset())
    m = metering.Meter(store, clock=lambda: 1000.0)
    write_metering(
        tmp_path / "metering.json",
        Metering(slug="b-1", metered=(Metered("api.anthropic.com", "anthropic"),), prices=default_prices()),
    )
    m.start()
    return m


def streamed(meter, chunks: list[bytes], inner=None) -> list[bytes]:
    fm = metering.FlowMeter(meter)
    fm.status, fm.sse, fm.streamed, fm.reader = 200, True, True, sse.SseReader()
    stream = metering.MeteredStream(inner, fm)
    out = [piece for c in [*chunks, b""] for piece in stream(c)]
    fm.finish()
    return out


def counts(meter, model: str = MODEL) -> dict[str, int]:
    return meter.ledger.models[model]


@given(st.lists(st.integers(min_value=0, max_value=3000), max_size=10))
@settings(max_examples=100, deadline=None)
def test_a_stream_cut_anywhere_passes_whole_and_is_counted_once(tmp_path_factory, cuts: list[int]) -> None:
    tmp = tmp_path_factory.mktemp("m")
    store = egress_module("policy_store").PolicyStore(str(tmp), {}, None, None, frozenset())
    m = metering.Meter(store)
    m.settings = Metering(slug="b", prices=default_prices())
    body = stream_bytes()
    points = sorted({min(c, len(body)) for c in cuts})
    chunks = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]
    out = streamed(m, chunks)
    assert b"".join(out) == body and all(out)  # every byte, no empty chunk (it would end the body)
    c = counts(m)
    assert c["input_tokens"] == 12 and c["output_tokens"] == 87 and c["requests"] == 1 and c["errors"] == 0
    assert c["cache_creation_input_tokens"] == 2048 and c["cache_read_input_tokens"] == 15360
    assert c["cache_creation_1h_input_tokens"] == 512


def test_a_stream_cut_before_its_usage_counts_an_estimate_of_its_output(meter) -> None:
    # A hostile agent hangs up after the last delta, before message_delta (whose usage holds the
    # output tokens): the characters that streamed are counted at CHARS_PER_TOKEN, never less.
    events = list(fake_messages_api.events(MODEL, deltas=40))
    cut = next(i for i, (name, _) in enumerate(events) if name == "message_delta")
    body = b"".join(f"event: {n}\ndata: {json.dumps(d)}\n\n".encode() for n, d in events[:cut])
    text = sum(len(d["delta"]["text"]) for n, d in events if n == "content_block_delta")
    streamed(meter, [body[:500], body[500:]])
    c = dict(counts(meter))
    assert c["output_tokens"] == -(-text // metering.CHARS_PER_TOKEN) and c["input_tokens"] == 12
    # a whole stream counts what its usage says, not the estimate
    whole = b"".join(f"event: {n}\ndata: {json.dumps(d)}\n\n".encode() for n, d in events)
    streamed(meter, [whole])
    assert counts(meter)["output_tokens"] == c["output_tokens"] + USAGE["output_tokens"]


def test_each_chunk_leaves_as_it_came_with_the_scrubbers_stream(meter) -> None:
    scrubber = egress_module("scrubber").Scrubber(["sk-secret-value-123456"])
    body = stream_bytes()
    chunks = [body[:40], body[40:41], body[41:]]
    plain = streamed(meter, chunks)
    assert plain == [c for c in chunks if c]  # nothing held back, nothing re-cut
    scrubbed = streamed(meter, chunks, inner=scrubber.stream())
    assert b"".join(scrubbed) == body


GARBAGE = [
    b"\xff\xfe\x00garbage\n\n",
    b"event: message_start\ndata: {not json\n\n",
    b"event: message_start\ndata: []\n\n",
    b'event: message_start\ndata: {"message": "str"}\n\n',
    b'event: message_start\ndata: {"message": {"model": 5, "usage": {"input_tokens": -4, "output_tokens": 1e99}}}\n\n',
    b'event: message_delta\ndata: {"usage": {"output_tokens": true, "cache_creation": [1]}}\n\n',
    b'event: message_delta\ndata: {"usage": {"output_tokens": 99999999999999999999}}\n\n',
    b"event: message_delta\ndata: " + b"[" * 100000 + b"\n\n",
    b"data: " + b"y" * (2 << 20) + b"\n\n",
]


@pytest.mark.parametrize("junk", GARBAGE, ids=range(len(GARBAGE)))
def test_malformed_events_never_raise_nor_block_the_stream(meter, junk: bytes) -> None:
    body = junk + stream_bytes()
    chunks = [body[i : i + 700] for i in range(0, len(body), 700)]
    assert b"".join(streamed(meter, chunks)) == body
    c = counts(meter)
    assert c["output_tokens"] == 87 and c["input_tokens"] == 12  # the real events after it still count


def test_a_reader_that_breaks_leaves_the_stream_flowing(meter) -> None:
    fm = metering.FlowMeter(meter)
    fm.status, fm.streamed = 200, True
    fm.reader = None
    fm.body = bytearray()
    fm.decoder = type("Broken", (), {"decompress": lambda *a: 1 / 0, "unconsumed_tail": b""})()
    stream = metering.MeteredStream(None, fm)
    assert stream(b"abc") == [b"abc"] and stream(b"def") == [b"def"] and stream(b"") == []
    fm.finish()
    assert meter.ledger.unread == 1 and counts(meter, metering.UNKNOWN)["requests"] == 1


def test_an_error_event_counts_an_error(meter) -> None:
    body = stream_bytes() + b'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error"}}\n\n'
    streamed(meter, [body])
    assert counts(meter)["errors"] == 1 and counts(meter)["requests"] == 1


# --- prices ------------------------------------------------------------------------------------------


def test_prices_match_by_name_or_dated_name_only() -> None:
    prices = default_prices()
    assert price_of(prices, "claude-sonnet-4-5-20250929") == prices["claude-sonnet-4-5"]
    assert price_of(prices, "claude-opus-4-5") == prices["claude-opus-4-5"]
    assert price_of(prices, "claude-opus-4-5-preview") is None  # never a guess by prefix
    assert price_of(prices, "claude-opus-9-20300101") is None
    assert price_of(prices, "claude-haiku-5-5") is None  # priced by prompt length: not a table's
    assert DEFAULT_PRICES["claude-opus-4-5"]["cache_write_1h"] == 10.0
    assert DEFAULT_PRICES["claude-opus-5-5"] == {
        "input": 4.0,
        "output": 20.0,
        "cache_write_5m": 5.0,
        "cache_write_1h": 8.0,
        "cache_read": 0.2,
    }


def test_an_unknown_model_is_counted_and_left_unpriced(tmp_path) -> None:
    ledger = Ledger()
    ledger.counts("claude-future-9")["output_tokens"] = 10
    ledger.counts(MODEL)["output_tokens"] = 1_000_000
    doc = ledger.to_doc("b", default_prices(), Budget(usd=20.0), 5.0)
    assert doc["models"]["claude-future-9"]["usd"] is None and doc["models"][MODEL]["usd"] == 15.0
    assert doc["totals"]["unpriced_models"] == ["claude-future-9"] and doc["totals"]["usd"] == 15.0
    assert doc["budget"]["level"] == "ok" and doc["budget"]["spent_tokens"] == 1_000_010
    assert Budget(usd=18.0).level(15.0, 0) == "warn" and Budget(tokens=10).level(0, 10) == "reached"


# --- through the addon -------------------------------------------------------------------------------

ROUTES = routes_yaml(route_line("api.anthropic.com", auth=AUTH, dlp=NO_BODY_DLP), route_line("other.example.com"))


@pytest.fixture
def state(tmp_path):
    (tmp_path / "supervise" / "queue").mkdir(parents=True)
    (tmp_path / "egress").mkdir()
    return tmp_path / "egress"


def budgeted(state, budget: Budget) -> None:
    """metering.json of bottle b-1: api.anthropic.com metered at the default prices, under ``budget``."""
    metered = (Metered("api.anthropic.com", "anthropic"),)
    write_metering(
        state / "metering.json", Metering(slug="b-1", metered=metered, prices=default_prices(), budget=budget)
    )


@pytest.fixture
def egress(state):
    budgeted(state, Budget(usd=round(one_answer_cost() * 2.5, 6)))
    with driven_egress(state, ROUTES, {"ANTHROPIC_API_KEY": KEY}) as addon:
        yield addon


def post(egress, path: str, doc: dict, host: str = "api.anthropic.com"):
    """A JSON POST to ``path`` on ``host``, sent through the request side of egress."""
    body = json.dumps(doc).encode()
    f = make_flow(
        "POST",
        f"https://{host}{path}",
        {"x-api-key": "placeholder", "content-type": "application/json", "content-length": str(len(body))},
    )
    f.request.data.content = body
    send(egress, f)
    return f


def call(egress, *, stream: bool, host: str = "api.anthropic.com", model: str = "claude-sonnet-4-5"):
    f = post(egress, "/v1/messages?beta=true", {"model": model, "messages": [], "stream": stream}, host)
    if f.response is not None:
        egress.response(f)
        return f
    if stream:
        payload = stream_bytes()
        f.response = http_response(200, payload, "text/event-stream")
        egress.responseheaders(f)
        assert callable(f.response.stream)
        got = b"".join(p for c in (payload[:100], payload[100:], b"") for p in f.response.stream(c))
        assert got == payload
        f.response.data.content = b""
    else:
        doc = {"type": "message", "model": MODEL, "content": [], "usage": USAGE}
        f.response = http_response(200, json.dumps(doc).encode(), "application/json")
        egress.responseheaders(f)
    egress.response(f)
    return f


def http_response(status: int, body: bytes, ctype: str):
    from mitmproxy import http

    return http.Response.make(status, body, {"content-type": ctype})


def test_json_and_streamed_answers_are_counted_per_model(egress, state) -> None:
    call(egress, stream=False)
    call(egress, stream=True)
    call(egress, stream=False, host="other.example.com")  # not a metered host
    doc = read_usage(state / "usage.json")
    assert doc is not None
    m = doc["models"][MODEL]
    assert m["requests"] == 2 and m["input_tokens"] == 24 and m["output_tokens"] == 174
    assert m["cache_read_input_tokens"] == 30720 and m["usd"] == pytest.approx(2 * one_answer_cost())
    assert doc["budget"]["level"] == "warn" and set(doc["models"]) == {MODEL}  # 2 of 2.5 answers: 80%


def test_a_reached_budget_refuses_the_next_call_and_asks_the_operator(egress, state) -> None:
    for _ in range(3):
        f = call(egress, stream=True)
        assert f.response.status_code == 200  # the answer that crossed the line came whole
    assert read_usage(state / "usage.json")["budget"]["level"] == "reached"
    queue = contract.Queue(state.parent / "supervise" / "queue")
    [p] = queue.all()
    assert p["kind"] == "budget" and p["status"] == "pending" and p["slug"] == "b-1"
    limit = round(one_answer_cost() * 2.5, 6)
    assert p["change"] == {"usd": limit * 2, "tokens": None} and p["budget"]["usd"] == limit
    f = call(egress, stream=True)
    assert f.response.status_code == 429 and f.response.headers["x-should-retry"] == "false"
    err = json.loads(f.response.content)
    assert err["type"] == "error" and err["error"]["type"] == "rate_limit_error"
    assert err["error"]["message"] == (
        f"budget: spent ${3 * one_answer_cost():,.2f} of ${limit:,.2f} for bottle b-1; the operator has been asked"
    )
    assert "x-api-key" not in f.request.headers or f.request.headers["x-api-key"] == "placeholder"
    assert decisions(state)[-1]["decision"] == "budget"
    call(egress, stream=False)  # refused again: still one proposal
    assert len(queue.all()) == 1
    # The operator raises it (the host rewrites metering.json, then SIGHUP): the level follows at
    # once, and the next call goes through.
    m = egress.egress.meter.settings
    write_metering(state / "metering.json", Metering(m.slug, m.metered, m.prices, m.prices_date, Budget(usd=limit * 2)))
    egress.egress.lifecycle.on_sighup()
    assert read_usage(state / "usage.json")["budget"]["level"] == "ok"
    assert call(egress, stream=True).response.status_code == 200


def test_a_rejected_budget_says_so(egress, state) -> None:
    for _ in range(3):
        call(egress, stream=False)
    queue = contract.Queue(state.parent / "supervise" / "queue")
    [p] = queue.all()
    queue.write({**p, "status": "rejected", "decision": {"by": "op", "at": "x", "note": "enough\nfor today"}})
    egress.egress.meter.clock = lambda: time.time() + 60
    call(egress, stream=False)  # the refusal that re-reads the decision
    err = json.loads(call(egress, stream=False).response.content)["error"]["message"]
    assert err.endswith("; the operator declined to raise it: enough for today")
    assert len(queue.all()) == 1


def test_a_dollar_budget_refuses_a_model_of_no_price(egress, state) -> None:
    f = call(egress, stream=False, model="claude-future-9")
    assert f.response.status_code == 403
    message = json.loads(f.response.content)["error"]["message"]
    assert (
        message.startswith("budget: model claude-future-9 has no price for bottle b-1")
        and "config.yaml prices" in message
    )
    m = egress.egress.meter.settings
    write_metering(
        state / "metering.json", Metering(m.slug, m.metered, m.prices, m.prices_date, Budget(usd=1.0, tokens=10**9))
    )
    assert call(egress, stream=False, model="claude-future-9").response.status_code == 200  # a tokens budget holds it


def test_a_message_batch_is_refused_under_a_budget(egress) -> None:
    body = json.dumps({"requests": [{"custom_id": "a", "params": {"model": "claude-sonnet-4-5", "messages": []}}]})
    f = make_flow(
        "POST",
        "https://api.anthropic.com/v1/messages/batches",
        {"x-api-key": "p", "content-type": "application/json", "content-length": str(len(body))},
    )
    f.request.data.content = body.encode()
    send(egress, f)
    assert f.response.status_code == 403
    assert "message batches are not available" in json.loads(f.response.content)["error"]["message"]


ANY_CALL = {"model": "claude-sonnet-4-5", "messages": [], "prompt": "x"}


@pytest.mark.parametrize(
    "path", ["//v1/messages", "/v1//messages/", "/V1/Messages", "/v1/%6Dessages", "/%2Fv1/messages"]
)
def test_a_reached_budget_holds_however_the_path_is_spelled(egress, path) -> None:
    for _ in range(3):
        call(egress, stream=False)
    f = post(egress, path, ANY_CALL)
    assert f.response is not None and f.response.status_code == 429
    assert f.request.headers["x-api-key"] == "placeholder"


@pytest.mark.parametrize("path", ["/v1/complete", "/v1/chat/completions", "/v1/responses", "/api/v1/messages"])
def test_a_post_egress_cannot_count_is_refused_under_a_budget(egress, state, path) -> None:
    f = post(egress, path, ANY_CALL)  # the budget is not reached: the endpoint itself is refused
    assert f.response is not None and f.response.status_code == 403
    assert f.request.headers["x-api-key"] == "placeholder"
    message = json.loads(f.response.content)["error"]["message"]
    assert message == (
        f"budget: POST {path.lower()} on api.anthropic.com is not a call egress can count toward bottle b-1's "
        "budget; under a budget, model calls go to /v1/messages"
    )
    assert decisions(state)[-1]["decision"] == "budget"
    assert post(egress, "/v1/files", ANY_CALL).response is None  # an upload costs nothing: it goes through
    m = egress.egress.meter.settings
    write_metering(state / "metering.json", Metering(m.slug, m.metered, m.prices, m.prices_date, None))
    egress.egress.lifecycle.on_sighup()
    assert post(egress, path, ANY_CALL).response is None  # no budget: nothing to hold


def test_a_wildcard_route_over_a_metered_host_is_metered(state) -> None:
    budgeted(state, Budget(tokens=1))
    routes = routes_yaml(route_line("*.anthropic.com", auth=AUTH, dlp=NO_BODY_DLP))
    with driven_egress(state, routes, {"ANTHROPIC_API_KEY": KEY}) as egress:
        assert call(egress, stream=False).response.status_code == 200  # counted: over the 1-token budget
        assert call(egress, stream=False).response.status_code == 429
        assert call(egress, stream=False, host="API.Anthropic.com.").response.status_code == 429


def test_a_call_egress_refused_later_is_not_counted(egress, state) -> None:
    f = make_flow(
        "POST", "https://api.anthropic.com/v1/messages", {"x-api-key": "p", "content-type": "application/json"}
    )
    f.request.data.content = b'{"model": "claude-sonnet-4-5", "messages": []}'
    f.request.headers["content-length"] = str(len(f.request.data.content))
    egress.requestheaders(f)
    egress.request(f)
    assert f.id in egress.egress.meter.flows
    f.response = http_response(403, b"egress: blocked", "text/plain")  # as a later check answers
    egress.response(f)
    assert f.id not in egress.egress.meter.flows and not egress.egress.meter.ledger.models


def test_usage_survives_a_restart(egress, state) -> None:
    call(egress, stream=False)
    store = egress.egress.store
    again = metering.Meter(store)
    again.reload(force=True)  # a SIGHUP before any call: the counts so far are read first
    assert again.ledger.models[MODEL]["requests"] == 1
    assert read_usage(state / "usage.json")["models"][MODEL]["requests"] == 1


def test_a_bad_metering_file_refuses_model_calls_until_fixed(state) -> None:
    (state / "metering.json").write_text("{")
    with driven_egress(state, ROUTES, {"ANTHROPIC_API_KEY": KEY}) as egress:
        f = call(egress, stream=False)
        assert f.response.status_code == 503 and "metering" in json.loads(f.response.content)["error"]["message"]
        # Which hosts are metered is in the file: every route's model calls wait, until it is fixed.
        assert call(egress, stream=False, host="other.example.com").response.status_code == 503
        write_metering(state / "metering.json", Metering(slug="b-1", prices=default_prices()))
        assert call(egress, stream=False).response.status_code == 200


# --- through a real mitmdump -------------------------------------------------------------------------


def test_real_mitmdump_streams_event_by_event_and_counts(tmp_path) -> None:
    """The fake holds its stream after message_start until the client has it: an egress that
    buffered the stream would never hand it on, and the read would time out."""
    up = free_port()
    fake = subprocess.Popen([sys.executable, str(FAKE), str(up)])
    try:
        (tmp_path / "routes.yaml").write_text(
            routes_yaml(route_line("127.0.0.1", up, scheme="http", auth=AUTH, dlp=NO_BODY_DLP))
        )
        write_metering(
            tmp_path / "metering.json",
            Metering(slug="b-2", metered=(Metered("127.0.0.1", "anthropic"),), prices=default_prices()),
        )
        proc, port = start_mitmdump(tmp_path, {"ANTHROPIC_API_KEY": KEY})
        try:
            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", up), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.05)
            body = json.dumps({"model": "claude-sonnet-4-5", "messages": [], "stream": True}).encode()
            c = socket.create_connection(("127.0.0.1", port), timeout=10)
            c.sendall(
                f"POST http://127.0.0.1:{up}/v1/messages HTTP/1.1\r\nHost: 127.0.0.1:{up}\r\n"
                f"x-api-key: placeholder\r\ncontent-type: application/json\r\nx-fake-pause-ms: 3000\r\n"
                f"content-length: {len(body)}\r\n\r\n".encode()
                + body
            )
            t0, got = time.monotonic(), b""
            while b"event: message_start" not in got:
                got += c.recv(65536)
            waited = time.monotonic() - t0
            while b"event: message_stop" not in got:
                got += c.recv(65536)
            c.close()
            assert waited < 2.5, f"message_start came only after {waited:.2f} s: the stream was held"
            deadline = time.monotonic() + 5
            doc = None
            while time.monotonic() < deadline:
                doc = read_usage(tmp_path / "usage.json")
                if doc and doc["totals"]["requests"] == 1 and doc["totals"]["output_tokens"] == 87:
                    break
                time.sleep(0.05)
            assert doc is not None and doc["models"]["claude-sonnet-4-5"]["cache_read_input_tokens"] == 15360, doc
        finally:
            stop_mitmdump(proc)
    finally:
        fake.terminate()
        fake.wait()
