"""The escape suite's judge: what counts as blocked, LEAKED or unclear (pure; no docker)."""

from __future__ import annotations

import hashlib
import subprocess

from bottle_tui import selftest
from bottle_tui.selftest import Attack, Targets, build_suite, judge, judge_all, split_output, suite_script

T = Targets(allowed="allowed.test", blocked="blocked.test", direct_ip="192.0.2.10", authed="auth.test",
            placeholder_env="TOKEN", git_remote="http://git-gate:8081/repo.git")


def attack(expect: str, id: str = "a") -> Attack:
    return Attack(id, "what", "true", expect)


def test_the_suite_has_the_attacks_the_issue_names() -> None:
    suite = build_suite(T)
    ids = {a.id for a in suite}
    assert sum(a.expect != "control" for a in suite) >= 30
    for needed in ("host-not-listed-http", "spoofed-host-header", "spoofed-sni", "raw-ip-via-proxy", "proxy-vars-unset",
                   "direct-tcp-22", "direct-tcp-53", "direct-tcp-80", "direct-tcp-443", "ipv6-mapped", "dns-crafted-name",
                   "websocket-blocked-host", "git-push-other-remote", "control-credential-injected"):
        assert needed in ids
    for kind in ("aws", "github", "slack"):
        for place in ("path", "query", "header", "cookie", "user-agent", "json-https", "form", "multipart", "gzip",
                      "chunked", "base64", "hex", "percent"):
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
    assert judge(attack("dlp"), "dlp: blocked aws-access-token in query\nHTTP 403", real_secrets=real).verdict == "blocked"
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
    cred = attack("control", "control-credential-injected")
    digest = hashlib.sha256(b"sk-real").hexdigest()
    assert judge(cred, '{"fake_internet": true, "x_api_key_sha256": "%s"}' % digest, real_secrets=real).verdict == "pass"
    assert judge(cred, '{"fake_internet": true, "x_api_key_sha256": "00"}', real_secrets=real).verdict == "FAIL"
    assert judge(cred, '{"fake_internet": true, "echo": "sk-real"}', real_secrets=real).verdict == "FAIL"


def test_report_counts_and_flags_failure() -> None:
    suite = [attack("egress", "x"), attack("control", "control-allowed-http")]
    out = f"{selftest.BEGIN}x\nCONNECTED\n{selftest.END}x\n{selftest.BEGIN}control-allowed-http\n" \
          f'{{"fake_internet": true}}\n{selftest.END}control-allowed-http\n'
    text = selftest.report(judge_all(suite, out, real_secrets={}))
    assert "1 attacks: 0 blocked, 1 LEAKED" in text and "FAILED" in text


def test_a_streamed_body_closed_mid_way_counts_only_with_egress_s_log_line() -> None:
    at = Attack("dlp-aws-chunked", "what", "true", "dlp-stream", log_path="/chunked/aws")
    closed = "curl: (52) Empty reply from server\nHTTP 000"
    logged = [{"decision": "block", "path": "/chunked/aws", "dlp": {"findings": [{"rule": "aws-access-token", "where": "body"}]}}]
    assert judge(at, closed, real_secrets={}, log=logged).verdict == "blocked"
    assert judge(at, closed, real_secrets={}, log=[]).verdict == "UNCLEAR"
    other = [{**logged[0], "path": "/chunked/github"}]
    assert judge(at, closed, real_secrets={}, log=other).verdict == "UNCLEAR"
    assert judge(at, '{"fake_internet": true}\nHTTP 200', real_secrets={}, log=logged).verdict == "LEAKED"
