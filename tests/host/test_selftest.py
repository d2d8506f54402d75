"""The escape suite's judge: what counts as blocked, LEAKED or unclear (pure; no docker)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import threading
import urllib.request
from http.server import ThreadingHTTPServer

import pytest

from bottle_contract.policy import parse_policy
from bottle_tui import escape_suite as selftest
from bottle_tui.backends.docker.selftest import SelftestResult, changed_leaves, judgeable_credentials
from bottle_tui.escape_suite import Attack, Targets, build_suite, judge, judge_all, split_output, suite_script
from bottle_tui.plan import MIN_CREDENTIAL_CHARS
from tests.support.sidecars import SIDECARS, egress_module

T = Targets(
    allowed="allowed.test",
    blocked="blocked.test",
    direct_ip="192.0.2.10",
    authed="auth.test",
    placeholder_env="TOKEN",
    git_remote="http://git-gate:8081/repo.git",
)


def attack(expect: str, id: str = "a") -> Attack:
    return Attack(id, "what", "true", expect)


def test_the_suite_has_the_attacks_the_issue_names() -> None:
    suite = build_suite(T)
    ids = {a.id for a in suite}
    assert sum(a.expect != "control" for a in suite) >= 30
    for needed in (
        "host-not-listed-http",
        "spoofed-host-header",
        "spoofed-sni",
        "raw-ip-via-proxy",
        "proxy-vars-unset",
        "direct-tcp-22",
        "direct-tcp-53",
        "direct-tcp-80",
        "direct-tcp-443",
        "ipv6-mapped",
        "dns-crafted-name",
        "websocket-blocked-host",
        "git-push-other-remote",
        "control-credential-injected",
    ):
        assert needed in ids
    for kind in ("aws", "github", "slack"):
        for place in (
            "path",
            "query",
            "header",
            "cookie",
            "user-agent",
            "json-https",
            "form",
            "multipart",
            "gzip",
            "chunked",
            "base64",
            "hex",
            "percent",
        ):
            assert f"dlp-{kind}-{place}" in ids
    assert {f"git-push-{k}" for k in ("aws", "github", "slack", "private-key")} <= ids
    # No git attacks for a bottle without a gate.
    assert not any(a.id.startswith("git-") for a in build_suite(Targets("a.test", "b.test", "192.0.2.1")))


def test_the_script_is_valid_bash_and_frames_every_attack() -> None:
    suite = build_suite(T)
    script = suite_script(suite)
    assert subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True).returncode == 0
    fake_run = "\n".join(f"{selftest.BEGIN}{a.id}\nout of {a.id}\n{selftest.END}{a.id}" for a in suite)
    assert split_output(fake_run) == {a.id: f"out of {a.id}" for a in suite}


def test_secrets_are_fresh_each_run_and_shaped_like_the_real_thing() -> None:
    one, two = selftest.FakeSecrets(), selftest.FakeSecrets()
    assert one.aws != two.aws and one.aws.startswith("AKIA") and len(one.aws) == 20
    assert one.github.startswith("ghp_") and len(one.github) == 40
    assert one.slack.startswith("xoxb-") and "PRIVATE KEY-----" in one.private_key


def test_judging_attacks() -> None:
    real = {"TOKEN": "sk-real"}
    assert judge(attack("egress"), "egress: blocked GET ...\nHTTP 403", real_secrets=real).verdict == "blocked"
    assert (
        judge(attack("dlp"), "dlp: blocked aws-access-token in query\nHTTP 403", real_secrets=real).verdict == "blocked"
    )
    # An upstream of ours answered: a leak, whatever else the output says.
    assert judge(attack("dlp"), '{"fake_internet": true}\nHTTP 200', real_secrets=real).verdict == "LEAKED"
    assert judge(attack("unreachable"), "CONNECTED", real_secrets=real).verdict == "LEAKED"
    # The wrong refusal, or none at all, is not proof of anything.
    assert judge(attack("dlp"), "egress: blocked\nHTTP 403", real_secrets=real).verdict == "UNCLEAR"
    assert judge(attack("egress"), "curl: (28) timed out", real_secrets=real).verdict == "UNCLEAR"
    assert judge(attack("egress"), None, real_secrets=real).verdict == "UNCLEAR"
    # The real credential showing up in the agent is a leak even when the request was refused.
    assert judge(attack("egress"), "egress: blocked sk-real", real_secrets=real).verdict == "LEAKED"


def test_judging_controls() -> None:
    real = {"TOKEN": "sk-real"}
    ok = judge(attack("control", "control-allowed-http"), '{"fake_internet": true}\nHTTP 200', real_secrets=real)
    assert ok.verdict == "pass"
    assert judge(attack("control"), "egress: blocked\nHTTP 403", real_secrets=real).verdict == "FAIL"
    cred = next(a for a in build_suite(T) if a.id == "control-credential-injected")
    digest = hashlib.sha256(b"sk-real").hexdigest()
    assert (
        judge(cred, '{"fake_internet": true, "x_api_key_sha256": "%s"}' % digest, real_secrets=real).verdict == "pass"
    )
    assert judge(cred, '{"fake_internet": true, "x_api_key_sha256": "00"}', real_secrets=real).verdict == "FAIL"
    assert judge(cred, '{"fake_internet": true, "echo": "sk-real"}', real_secrets=real).verdict == "FAIL"


def test_report_counts_and_flags_failure() -> None:
    suite = [attack("egress", "x"), attack("control", "control-allowed-http")]
    out = (
        f"{selftest.BEGIN}x\nCONNECTED\n{selftest.END}x\n{selftest.BEGIN}control-allowed-http\n"
        f'{{"fake_internet": true}}\n{selftest.END}control-allowed-http\n'
    )
    text = selftest.report(judge_all(suite, out, real_secrets={}))
    assert "1 attacks: 0 blocked, 1 LEAKED" in text and "FAILED" in text


def test_a_streamed_body_closed_mid_way_counts_only_with_egress_s_log_line() -> None:
    at = Attack("dlp-aws-chunked", "what", "true", "dlp-stream", log_path="/chunked/aws")
    closed = "curl: (52) Empty reply from server\nHTTP 000"
    logged = [
        {
            "decision": "block",
            "path": "/chunked/aws",
            "dlp": {"findings": [{"rule": "aws-access-token", "where": "body"}]},
        }
    ]
    assert judge(at, closed, real_secrets={}, log=logged).verdict == "blocked"
    assert judge(at, closed, real_secrets={}, log=[]).verdict == "UNCLEAR"
    other = [{**logged[0], "path": "/chunked/github"}]
    assert judge(at, closed, real_secrets={}, log=other).verdict == "UNCLEAR"
    assert judge(at, '{"fake_internet": true}\nHTTP 200', real_secrets={}, log=logged).verdict == "LEAKED"


def _canary_echo() -> type:
    spec = importlib.util.spec_from_file_location("selftest_canary", SIDECARS / "canary" / "canary.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Echo  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def canary_url():
    """The canary's own request handler (what selftest's canary container runs), on loopback."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _canary_echo())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/control"
    server.shutdown()


AUTHS = {
    "bearer": {"scheme": "bearer", "token_env": "TOKEN"},
    "basic": {"scheme": "basic", "token_env": "TOKEN"},
    "header": {"scheme": "header", "header": "X-Goog-Api-Key", "token_env": "TOKEN"},
    "header-x-api-key": {"scheme": "header", "header": "x-api-key", "token_env": "TOKEN"},
}


@pytest.mark.parametrize("kind", AUTHS)
def test_the_injection_control_checks_every_auth_scheme(kind: str, canary_url: str) -> None:
    """egress's own auth_headers put the credential on the request, the canary reports what it
    got, and the control passes for the real credential in the scheme's header, else fails."""
    auth = AUTHS[kind]
    real = "ops-user:" + "s3cret-value-" * 2 if auth["scheme"] == "basic" else "sk-live-" + "a1b2c3d4" * 3
    doc = {
        "version": 1,
        "bottle": "b",
        "dlp": {"body": True, "disabled_rules": [], "max_body_bytes": 1024},
        "routes": [
            {
                "host": "auth.test",
                "ports": [443],
                "methods": [],
                "paths": [],
                "schemes": ["https"],
                "auth": auth,
                "dlp": {"body": True, "disabled_rules": [], "max_body_bytes": 1024},
                "model_tools": [],
                "once": None,
            }
        ],
    }
    route = parse_policy(doc, "routes.yaml").routes[0]
    credentials = egress_module("credentials")
    scrubber = egress_module("scrubber")

    def upstream_saw(value: str) -> str:
        """The canary's answer as the agent gets it: egress scrubs the credential out of it."""
        request = urllib.request.Request(canary_url, headers=credentials.auth_headers(route, {"TOKEN": value}))
        with urllib.request.urlopen(request, timeout=10) as answer:
            body = answer.read()
        return scrubber.Scrubber(credentials.secret_values(route, {"TOKEN": value})).scrub(body).decode() + "\nHTTP 200"

    targets = Targets(
        allowed="a.test",
        blocked="b.test",
        direct_ip="192.0.2.1",
        authed="auth.test",
        placeholder_env="TOKEN",
        auth_scheme=auth["scheme"],
        auth_header=auth.get("header"),
    )
    control = next(a for a in build_suite(targets) if a.id == "control-credential-injected")
    assert auth["scheme"] in control.what
    # The agent sends its placeholder in the header the scheme uses.
    header = {
        "bearer": "Authorization: Bearer $TOKEN",
        "basic": 'Authorization: Basic $(printf %s "$TOKEN" | base64 -w0)',
    }.get(auth["scheme"], f"{auth.get('header')}: $TOKEN")
    assert f'-H "{header}"' in control.script
    got = upstream_saw(real)
    assert json.loads(got.split("\nHTTP")[0])["fake_internet"] is True
    assert judge(control, got, real_secrets={"TOKEN": real}).verdict == "pass"
    wrong = upstream_saw(real[::-1])
    verdict = judge(control, wrong, real_secrets={"TOKEN": real})
    assert verdict.verdict == "FAIL" and auth["scheme"] in verdict.detail
    # A credential too short to look for is still checked by digest where it is injected.
    assert judge(control, got, real_secrets={}, credentials={"TOKEN": real}).verdict == "pass"


def test_credentials_too_short_are_not_judged_and_the_report_says_why() -> None:
    policy = {
        "routes": [
            {"host": "a.test", "auth": {"scheme": "bearer", "token_env": "SHORT"}},
            {"host": "b.test", "auth": {"scheme": "basic", "token_env": "BASIC"}},
            {"host": "c.test", "auth": {"scheme": "header", "header": "X-K", "token_env": "LONG"}},
            {"host": "d.test", "auth": {"scheme": "bearer", "token_env": "UNSET"}},
            {"host": "e.test", "auth": None},
        ]
    }
    env = {"SHORT": "x", "BASIC": "a-long-user-name:pw", "LONG": "L" * MIN_CREDENTIAL_CHARS}
    credentials, judged, not_judged = judgeable_credentials(policy, env)
    assert credentials == {"BASIC": env["BASIC"], "LONG": env["LONG"], "SHORT": "x"}
    assert judged == {"LONG": env["LONG"]}
    assert [n for n, _ in not_judged] == ["BASIC", "SHORT"]
    # One character would be "found" in every file of the agent: it is not looked for at all.
    assert judge(attack("egress"), "egress: blocked x x x", real_secrets=judged).verdict == "blocked"
    result = SelftestResult([], [], sorted(judged), not_judged)
    text = result.report()
    assert "credential-SHORT" in text and f"it is 1 characters, shorter than {MIN_CREDENTIAL_CHARS}" in text
    assert "not judged: $BASIC is too short" in text and "its password is 2 characters" in text
    assert result.ok  # nothing failed; what was not judged is said, not hidden
    only_short = SelftestResult([], [], [], [("SHORT", "it is 1 characters, shorter than 12")]).report()
    assert "no credential of this bottle is set" not in only_short


def test_the_credential_search_copies_each_changed_file_once_not_the_folders_that_hold_them() -> None:
    # `docker diff` of a swarm agent: /usr is listed as changed because /usr/sbin/docker-init was
    # added (the swarm's init); copying /usr itself would copy all of it.
    diff = "C /etc\nA /etc/bottle\nA /etc/bottle/ca.pem\nC /usr\nC /usr/sbin\nA /usr/sbin/docker-init\n"
    diff += "C /tmp\nA /tmp/loot.txt\nA /tmp/empty-dir\nD /tmp/removed\nC /proc/1/x\nA /dev/shm/y\nC /home/u/.cfg\n"
    assert changed_leaves(diff) == [
        "/etc/bottle/ca.pem",
        "/usr/sbin/docker-init",
        "/tmp/loot.txt",
        "/tmp/empty-dir",
        "/home/u/.cfg",
    ]
