"""Notifications (bottle_tui/notify.py): coalescing, the rate limit, backoff, each format made
inert, config.yaml's notify keys, and the sinks for real: webhooks to a receiver on loopback and
a command given the message on stdin."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from bottle_tui import notify
from bottle_tui.config import NotifySettings, Webhook, load_config
from bottle_tui.errors import BottleError
from bottle_tui.notify import (
    CommandSink,
    Event,
    Message,
    Notifier,
    TokenBucket,
    WebhookSink,
    backoff_delays,
    build_sinks,
    digest,
    osc,
    render,
)
from tests.support.webhooks import Receiver

HOSTILE = "\x1b]0;owned\x07<https://evil.example|click here> <!channel> @here *bold* _it_ & ; \u202eevil\r\nnext"


def wait(predicate, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


def settings(**kw) -> NotifySettings:
    kw.setdefault("coalesce_seconds", 0.05)
    kw.setdefault("max_per_minute", 600.0)
    return NotifySettings(**kw)


# --- coalescing, rate limit, backoff (pure) --------------------------------------------------------


def test_one_event_says_itself_and_a_burst_is_one_line() -> None:
    one = digest([Event("proposal", "impl-aaaaaa", "egress-route GET pypi.org:443")])
    assert one.title == "bottle-tui: New proposal"
    assert one.text == "impl-aaaaaa: egress-route GET pypi.org:443"
    burst = [Event("proposal", "impl-aaaaaa", f"draft: h{i}.example") for i in range(48)]
    burst += [Event("proposal", "rev-bbbbbb", "x"), Event("proposal", "rev-bbbbbb", "y")]
    burst.append(Event("budget", "rev-bbbbbb", "budget reached: spent $5.01 of $5.00", level="reached"))
    m = digest(burst, dropped=3)
    assert m.title == "bottle-tui: 51 events"
    assert m.text == (
        "50 new proposals (impl-aaaaaa x48, rev-bbbbbb x2); 1 budget alerts (rev-bbbbbb) (+3 earlier events not delivered)"
    )
    assert len(m.events) == 51 and m.urgent and not one.urgent


def test_many_bottles_are_named_five_at_most() -> None:
    m = digest([Event("waiting", f"agent-{i}", "waiting for input") for i in range(8)])
    assert m.text.endswith("agent-4 and 3 more)")


def test_token_bucket_holds_to_the_rate() -> None:
    bucket = TokenBucket(per_minute=6)
    assert bucket.delay(100.0) == 0
    bucket.take(100.0)
    assert bucket.delay(100.0) == pytest.approx(10.0)
    assert bucket.delay(105.0) == pytest.approx(5.0)
    assert bucket.delay(110.0) == 0
    bucket.take(110.0)
    assert bucket.delay(1000.0) == 0  # a long quiet time does not save up a burst beyond one
    bucket.take(1000.0)
    assert bucket.delay(1000.0) > 0


def test_backoff_doubles_up_to_its_cap() -> None:
    assert backoff_delays(4, base=1.0, cap=30.0) == [1.0, 2.0, 4.0, 8.0]
    assert backoff_delays(7, base=2.0, cap=30.0) == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert backoff_delays(0) == []


# --- every format is inert ---------------------------------------------------------------------------


def hostile_message() -> Message:
    return digest([Event("proposal", "impl\x1b[31m-aaaaaa", HOSTILE)])


def test_slack_gets_no_markup_link_or_mention() -> None:
    body, headers = render("slack", hostile_message())
    doc = json.loads(body)
    assert headers["Content-Type"] == "application/json"
    assert doc["mrkdwn"] is False and doc["unfurl_links"] is False and doc["unfurl_media"] is False
    text = doc["text"]
    assert "<" not in text and ">" not in text  # no <url|label> link, no <!channel>
    assert "&lt;https://evil.example|click here&gt;" in text and "&lt;!channel&gt;" in text
    assert "&amp; ;" in text  # & escaped as Slack requires
    assert "@" not in text and "\uff20here" in text  # no mention can fire
    assert not any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 for c in text)
    assert "\u202e" not in text  # no right-to-left override


def test_json_lists_the_events_inert() -> None:
    body, headers = render("json", hostile_message())
    doc = json.loads(body)
    assert headers["Content-Type"] == "application/json"
    assert doc["source"] == "bottle-tui" and doc["count"] == 1
    assert doc["events"][0]["kind"] == "proposal" and doc["events"][0]["bottle"] == "impl\ufffd[31m-aaaaaa"
    for value in (doc["text"], doc["title"], doc["events"][0]["text"]):
        assert "\x1b" not in value and "\x07" not in value and "\r" not in value and "\n" not in value


def test_ntfy_is_plain_text_with_a_safe_title_header() -> None:
    body, headers = render("ntfy", hostile_message())
    assert "Markdown" not in headers  # ntfy renders Markdown only when asked to
    assert headers["Priority"] == "default" and headers["Content-Type"].startswith("text/plain")
    assert b"\x1b" not in body and b"\n" not in body and b"\r" not in body
    urgent = digest([Event("died", "b\u00e9-aaaaaa", "the agent stopped running (exited)")])
    body, headers = render("ntfy", urgent)
    assert headers["Priority"] == "high"
    assert headers["Title"] == "bottle-tui: Bottle died"  # ours, never the agent's: the slug is in the body
    assert body.decode() == "b\u00e9-aaaaaa: the agent stopped running (exited)"


def test_osc_payload_cannot_end_its_sequence_or_start_another() -> None:
    seq = osc(hostile_message(), "both")
    first, second = seq.split("\x07")[:2]
    assert first.startswith("\x1b]9;bottle-tui: New proposal: ")
    assert second.startswith("\x1b]777;notify;bottle-tui: New proposal;")
    for part in (first, second):
        assert part.count("\x1b") == 1  # only the sequence's own introducer
    assert second.count(";") == 3  # 777;notify;title;body: the body's own ; became ,
    assert seq.count("\x07") == 2
    # The title is ours today, but the sequence holds even if a title carried a separator.
    assert osc(Message("a;b", "c;d", ()), "osc777") == "\x1b]777;notify;a,b;c,d\x07"
    assert osc(hostile_message(), "osc9").count("\x1b]") == 1
    assert "777" in osc(hostile_message(), "osc777") and "]9;" not in osc(hostile_message(), "osc777")


def test_osc_inside_tmux_is_passed_through() -> None:
    seq = osc(digest([Event("waiting", "a-aaaaaa", "waiting for input")]), "osc9", tmux=True)
    assert seq.startswith("\x1bPtmux;\x1b\x1b]9;bottle-tui: Waiting for input: a-aaaaaa: waiting for input\x07")
    assert seq.endswith("\x1b\\")
    inner = seq[len("\x1bPtmux;") : -2]
    assert "\x1b" not in inner.replace("\x1b\x1b", "")  # every ESC inside doubled, as tmux wants


# --- config.yaml ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("notify: {sound: true}\n", "notify.sound: unknown key; use one of: events, terminal"),
        ("notify: {events: [proposal, lunch]}\n", "notify.events: expected a list of proposal, waiting, budget, died"),
        ("notify: {terminal: osc8}\n", "notify.terminal: expected true, false or one of osc9, osc777, both"),
        ("notify: {command: notify-send}\n", "notify.command: expected an argv list"),
        ("notify: {command_timeout: 0}\n", "notify.command_timeout: expected a number > 0"),
        ("notify: {max_per_minute: -1}\n", "notify.max_per_minute: expected a number > 0"),
        ("notify: {coalesce_seconds: soon}\n", "notify.coalesce_seconds: expected a number >= 0"),
        ("notify: {webhooks: {url_env: X}}\n", "notify.webhooks: expected a list"),
        (
            "notify: {webhooks: [{url: 'https://hooks.example/T/B/x'}]}\n",
            "notify.webhooks[0].url: a webhook URL is a secret: put it in an environment variable",
        ),
        ("notify: {webhooks: [{url_env: 'not a name'}]}\n", "notify.webhooks[0].url_env: expected the name of an"),
        ("notify: {webhooks: [{url_env: HOOK, format: teams}]}\n", "notify.webhooks[0].format: expected one of json"),
        ("notify: {webhooks: [{url_env: HOOK, retry: 3}]}\n", "notify.webhooks[0].retry: unknown key"),
    ],
)
def test_bad_notify_keys_are_one_line_errors(tmp_path: Path, text: str, error: str) -> None:
    (tmp_path / "config.yaml").write_text(text)
    with pytest.raises(BottleError) as exc:
        load_config(tmp_path)
    message = str(exc.value)
    assert message.startswith(f"{tmp_path / 'config.yaml'}: ") and error in message and "\n" not in message
    assert "hooks.example" not in message  # the secret is not repeated back


def test_notify_keys_parse(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(
        "notify:\n  terminal: true\n  events: [proposal, budget]\n  command: [notify-send, bottle-tui]\n"
        "  webhooks:\n    - {url_env: SLACK_HOOK, format: slack}\n    - {url_env: NTFY_URL, format: ntfy}\n"
        "  coalesce_seconds: 0\n  max_per_minute: 2\n"
    )
    got = load_config(tmp_path).notify
    assert got == NotifySettings(
        events=("proposal", "budget"),
        terminal="both",
        command=("notify-send", "bottle-tui"),
        webhooks=(Webhook("SLACK_HOOK", "slack"), Webhook("NTFY_URL", "ntfy")),
        coalesce_seconds=0.0,
        max_per_minute=2.0,
    )
    assert got.enabled and not NotifySettings().enabled


def test_sinks_that_cannot_be_built_say_so_without_the_secret() -> None:
    s = NotifySettings(
        terminal="osc9",
        webhooks=(Webhook("UNSET_HOOK"), Webhook("FTP_HOOK"), Webhook("GOOD_HOOK", "slack")),
    )
    env = {"FTP_HOOK": "ftp://secret.example/x", "GOOD_HOOK": "https://secret.example/T/1"}
    sinks, problems = build_sinks(s, env)
    assert [type(x) for x in sinks] == [WebhookSink]
    assert problems == [
        "notify.terminal: no terminal here (a headless watch): terminal notifications are off",
        "notify.webhooks[0]: $UNSET_HOOK is not set: that webhook is off",
        "notify.webhooks[1]: $FTP_HOOK does not hold an http(s) URL: that webhook is off",
    ]
    assert "secret.example" not in repr(sinks[0]) and sinks[0].name == "webhook $GOOD_HOOK (slack)"


# --- the sinks for real ------------------------------------------------------------------------------


def webhook_notifier(receiver: Receiver, fmt: str = "json", problems: list[str] | None = None, **kw) -> Notifier:
    delays = kw.pop("delays", None)
    sink = WebhookSink("TEST_HOOK", receiver.url, fmt, timeout=5)
    out = problems if problems is not None else []
    return Notifier(settings(**kw), [sink], on_problem=out.append, delays=delays).start()


def test_a_burst_of_fifty_drafts_is_one_webhook_message(receiver: Receiver) -> None:
    n = webhook_notifier(receiver, coalesce_seconds=0.3)
    try:
        for i in range(50):
            n.emit(Event("proposal", "impl-aaaaaa", f"draft: egress-route GET h{i}.example:443"))
        assert n.flush(10)
    finally:
        n.close()
    assert len(receiver.received) == 1
    doc = receiver.received[0].json()
    assert doc["count"] == 50 and doc["text"] == "50 new proposals (impl-aaaaaa x50)"
    assert receiver.received[0].path == "/hook"


def test_the_rate_limit_holds_a_burst_back_and_coalesces_it(receiver: Receiver) -> None:
    n = webhook_notifier(receiver, max_per_minute=30.0)  # one message per 2 s
    try:
        n.emit(Event("waiting", "a-aaaaaa", "waiting for input"))
        receiver.wait_for(1)
        for slug in ("b-bbbbbb", "c-cccccc", "d-dddddd"):
            n.emit(Event("waiting", slug, "waiting for input"))
        time.sleep(0.8)
        assert len(receiver.received) == 1  # held back by the limit, not sent one by one
        got = receiver.wait_for(2)
    finally:
        n.close()
    assert len(got) == 2 and got[1].json()["count"] == 3
    assert got[1].at - got[0].at > 1.5


def test_a_failing_webhook_is_retried_with_backoff_then_delivers(receiver: Receiver) -> None:
    receiver.fail = 3
    problems: list[str] = []
    n = webhook_notifier(receiver, problems=problems, delays=[0.05, 0.1, 0.2, 0.4])
    try:
        n.emit(Event("died", "a-aaaaaa", "the bundle stopped running (exited)"))
        got = receiver.wait_for(4)
        assert n.flush(5)
    finally:
        n.close()
    assert len(got) == 4 and problems == []
    gaps = [b.at - a.at for a, b in zip(got, got[1:], strict=False)]
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1 and gaps[2] >= 0.2  # it waited longer each time


def test_a_webhook_that_keeps_failing_is_reported_once_until_it_works(receiver: Receiver) -> None:
    receiver.fail = 1000
    problems: list[str] = []
    n = webhook_notifier(receiver, problems=problems, delays=[0.01, 0.01])
    try:
        n.emit(Event("waiting", "a-aaaaaa", "waiting for input"))
        wait(lambda: len(problems) == 1, "the report")
        n.emit(Event("waiting", "b-bbbbbb", "waiting for input"))
        assert n.flush(5)
        assert len(receiver.received) == 6 and len(problems) == 1  # 3 tries each, one report
        assert problems[0] == (
            "notify: webhook $TEST_HOOK (json) failed (HTTP 500) after 3 tries; "
            "further failures are not reported until it works again"
        )
        assert "127.0.0.1" not in problems[0]  # the URL is a secret
        receiver.fail = 0
        n.emit(Event("waiting", "c-cccccc", "waiting for input"))
        assert n.flush(5)
        receiver.fail = 1000
        n.emit(Event("waiting", "d-dddddd", "waiting for input"))
        wait(lambda: len(problems) == 2, "the report after it had worked again")
    finally:
        n.close()


def test_an_unreachable_webhook_names_the_variable_not_the_url() -> None:
    import socket

    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    problems: list[str] = []
    sink = WebhookSink("DOWN_HOOK", f"http://127.0.0.1:{port}/x?token=sekrit", "ntfy", timeout=2)
    n = Notifier(settings(), [sink], on_problem=problems.append, delays=[]).start()
    try:
        n.emit(Event("waiting", "a-aaaaaa", "waiting for input"))
        wait(lambda: problems, "the report")
    finally:
        n.close()
    assert problems[0].startswith("notify: webhook $DOWN_HOOK (ntfy) failed (ConnectionRefusedError")
    assert "sekrit" not in problems[0] and str(port) not in problems[0]


@pytest.mark.parametrize("fmt", ["json", "slack", "ntfy"])
def test_each_format_arrives_as_its_service_reads_it(receiver: Receiver, fmt: str) -> None:
    n = webhook_notifier(receiver, fmt)
    try:
        n.emit(Event("proposal", "impl-aaaaaa", HOSTILE))
        got = receiver.wait_for(1)
    finally:
        n.close()
    headers = {k.lower(): v for k, v in got[0].headers.items()}
    if fmt == "ntfy":
        assert headers["title"] == "bottle-tui: New proposal" and headers["priority"] == "default"
        assert got[0].body.decode().startswith("impl-aaaaaa: \ufffd]0,owned") is False
        assert b"\x1b" not in got[0].body
    else:
        doc = got[0].json()
        assert headers["content-type"] == "application/json"
        assert ("<" not in doc["text"]) if fmt == "slack" else doc["count"] == 1


class BlockedSink:
    """A sink whose send waits until the test lets it go (a stuck webhook, in-process)."""

    name = "blocked"
    retries = 0

    def __init__(self) -> None:
        self.go = threading.Event()
        self.got: list[Message] = []

    def send(self, message: Message) -> None:
        self.go.wait(10)
        self.got.append(message)


def test_a_stuck_sink_never_blocks_emit_and_its_queue_is_bounded() -> None:
    sink = BlockedSink()
    n = Notifier(settings(coalesce_seconds=0.0, max_per_minute=60000.0), [sink], on_problem=lambda _: None).start()
    try:
        for i in range(400):
            n.emit(Event("proposal", "a-aaaaaa", f"p{i}"))
            if i % 20 == 0:
                time.sleep(0.01)  # lets the coalescer hand on many small batches
        worker = n.workers[0]
        wait(lambda: worker.dropped > 0, "the full queue to drop")
        assert worker.queue.qsize() <= notify.SINK_QUEUE
        sink.go.set()
        assert n.flush(10)
    finally:
        n.close()
    assert any(m.dropped for m in sink.got)  # what was lost is said in the next message
    assert any("earlier events not delivered" in m.text for m in sink.got)
    assert sum(len(m.events) + m.dropped for m in sink.got) == 400  # every event sent or counted


def test_the_command_gets_the_message_as_json_on_stdin(tmp_path: Path) -> None:
    out = tmp_path / "got"
    script = (
        f"import sys, pathlib, uuid; pathlib.Path({str(out)!r}, uuid.uuid4().hex).write_bytes(sys.stdin.buffer.read())"
    )
    out.mkdir()
    sink = CommandSink((sys.executable, "-c", script), timeout=10)
    n = Notifier(settings(), [sink], on_problem=lambda _: None).start()
    try:
        n.emit(Event("budget", "a-aaaaaa", "budget at 80%: spent $4.00 of $5.00", level="warn"))
        assert n.flush(10) and n.workers[0].sent == 1
    finally:
        n.close()
    doc = json.loads(next(out.iterdir()).read_text())
    assert doc["events"][0] == {
        "kind": "budget",
        "bottle": "a-aaaaaa",
        "text": "budget at 80%: spent $4.00 of $5.00",
        "at": doc["events"][0]["at"],
        "level": "warn",
    }


def test_a_command_that_hangs_is_timed_out_and_reported(tmp_path: Path) -> None:
    problems: list[str] = []
    sink = CommandSink((sys.executable, "-c", "import time; time.sleep(30)"), timeout=0.3)
    n = Notifier(settings(), [sink], on_problem=problems.append).start()
    try:
        n.emit(Event("waiting", "a-aaaaaa", "waiting for input"))
        wait(lambda: problems, "the report")
    finally:
        n.close()
    assert (
        problems[0].startswith(f"notify: command {sys.executable} failed (") and "timed out after 0.3 s" in problems[0]
    )


def test_budget_text_names_the_limit_and_what_was_spent() -> None:
    doc = {"usd": 5.0, "tokens": None, "level": "warn", "spent_usd": 4.1, "spent_tokens": 10}
    assert notify.budget_text(doc) == "budget at 80%: spent $4.10 of $5.00"
    tokens = {"usd": None, "tokens": 1000, "level": "reached", "spent_usd": 0, "spent_tokens": 1002}
    assert notify.budget_text(tokens) == "budget reached: spent 1002 of 1000 tokens"


# --- whatever an agent writes, each format stays inert (property tests) ---------------------------


AGENT_TEXT = st.text(st.characters(codec="utf-8"), max_size=300) | st.text(
    "<>&@!;|*_`~\x1b\x07\x9c\x9d\r\n\u202e:/", max_size=60
)


@hsettings(max_examples=300, deadline=None)
@given(slug=AGENT_TEXT, text=AGENT_TEXT, many=st.booleans())
def test_no_agent_text_escapes_any_format(slug: str, text: str, many: bool) -> None:
    events = [Event("proposal", slug, text)] * (3 if many else 1)
    m = digest(events)
    for mode in ("osc9", "osc777", "both"):
        for tmux in (False, True):
            seq = osc(m, mode, tmux=tmux)
            n = 2 if mode == "both" else 1
            assert seq.count("\x07") == n  # each sequence ends where it should, and nowhere else
            assert seq.count("\x1b]") == n and "\x9c" not in seq and "\x9d" not in seq
            if mode == "osc777" and not tmux:
                assert seq.count(";") == 3  # 777;notify;title;body
            if tmux:
                assert seq.count("\x1bPtmux;") == n and seq.count("\x1b\\") == n
    slack = json.loads(render("slack", m)[0])["text"]
    assert not set(slack) & set("<>@\x1b\x07\r\n\u202e")
    assert all(slack[i:].startswith(("&amp;", "&lt;", "&gt;")) for i, c in enumerate(slack) if c == "&")
    body, headers = render("ntfy", m)
    assert not set(body.decode()) & set("\x1b\x07\r\n\u202e") and all(
        v.isascii() and "\n" not in v for v in headers.values()
    )
    doc = json.loads(render("json", m)[0])
    assert all(not set(e["text"] + e["bottle"]) & set("\x1b\x07\r\n") for e in doc["events"])
