"""A deterministic corpus of realistic texts for DLP parity and benchmarks.

Texts are code, config, shell and log snippets, some clean and some carrying secrets of many of
gitleaks' rule shapes: hand-made prefixed tokens, values for gitleaks' many "name = value" rules
(shapes read off the rules file itself), values its allowlists, stopwords or entropy reject, and
secrets hidden in base64, base64url, hex, percent and unicode escapes, some nested.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import random
import string
import tempfile
import tomllib
from pathlib import Path

import re2

# gitleaks v8.30.1's full config/gitleaks.toml, byte for byte (MIT licence, (c) Zachary Rice),
# from `go mod download -json github.com/zricethezav/gitleaks/v8@v8.30.1` (its Dir), the file
# the sidecars image builds in: the rules egress runs, for unit tests that judge DLP.
FULL_RULES = Path(__file__).parent / "gitleaks-v8.30.1.toml"


def full_rules_database() -> Path:
    """Where full_request_scanner keeps the full rules' compiled database (valid once it ran)."""
    digest = hashlib.sha256(FULL_RULES.read_bytes()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"bottle-dlp-{digest}.hsdb"


@functools.cache
def full_request_scanner():
    """A RequestScanner over the full rules; the Hyperscan database is compiled once and kept
    in the temp folder under the rules' digest (a stale one is recompiled, never used)."""
    from tests.support.sidecars import egress_module

    dlp, dr = egress_module("dlp"), egress_module("dlp.request")
    db = full_rules_database()
    scanner = dlp.Scanner.load(FULL_RULES, db_path=db)
    rules = scanner.rules
    if dlp.load_database(rules, db) is None:
        compiled = dlp.compile_database(rules)
        dlp.save_database(rules, compiled[0], compiled[1], db)
    return dr.RequestScanner(scanner)


ALNUM = string.ascii_letters + string.digits
LOWER_ALNUM = string.ascii_lowercase + string.digits
HEX = "0123456789abcdef"
B32 = "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L"


def _s(rng: random.Random, chars: str, n: int) -> str:
    return "".join(rng.choice(chars) for _ in range(n))


def _jwt(rng: random.Random) -> str:
    def part(d: str) -> str:
        return base64.urlsafe_b64encode(d.encode()).decode().rstrip("=")

    return (
        part('{"alg":"HS256","typ":"JWT"}')
        + "."
        + part('{"sub":"%s","iat":%d}' % (_s(rng, LOWER_ALNUM, 8), rng.randint(10**9, 2 * 10**9)))
        + "."
        + _s(rng, ALNUM + "_-", 43)
    )


def _pem(rng: random.Random) -> str:
    body = "\n".join(_s(rng, ALNUM + "+/", 64) for _ in range(rng.randint(2, 5)))
    return f"-----BEGIN RSA PRIVATE KEY-----\n{body}\n-----END RSA PRIVATE KEY-----"


# (name, maker): prefixed token shapes from gitleaks' rules, written by hand
TOKENS = [
    ("aws", lambda r: "AKIA" + _s(r, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16)),
    ("aws-asia", lambda r: "ASIA" + _s(r, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16)),
    ("github-pat", lambda r: "ghp_" + _s(r, ALNUM, 36)),
    ("github-oauth", lambda r: "gho_" + _s(r, ALNUM, 36)),
    ("github-fine", lambda r: "github_pat_" + _s(r, ALNUM + "_", 82)),
    ("gitlab", lambda r: "glpat-" + _s(r, ALNUM + "_-", 20)),
    ("slack-bot", lambda r: f"xoxb-{_s(r, string.digits, 11)}-{_s(r, string.digits, 12)}-{_s(r, ALNUM, 24)}"),
    (
        "slack-webhook",
        lambda r: (
            "https://hooks.slack.com/services/" + _s(r, ALNUM, 9) + "/" + _s(r, ALNUM, 11) + "/" + _s(r, ALNUM, 24)
        ),
    ),
    ("stripe", lambda r: r.choice(["sk_live_", "rk_test_", "sk_test_"]) + _s(r, ALNUM, 24)),
    ("openai", lambda r: "sk-" + _s(r, ALNUM, 20) + "T3BlbkFJ" + _s(r, ALNUM, 20)),
    ("anthropic", lambda r: "sk-ant-api03-" + _s(r, ALNUM + "_-", 93) + "AA"),
    ("gcp", lambda r: "AIza" + _s(r, ALNUM + "_-", 35)),
    ("npm", lambda r: "npm_" + _s(r, LOWER_ALNUM, 36)),
    ("pypi", lambda r: "pypi-AgEIcHlwaS5vcmc" + _s(r, ALNUM + "_-", 60)),
    ("sendgrid", lambda r: "SG." + _s(r, ALNUM, 22) + "." + _s(r, ALNUM, 43)),
    ("twilio", lambda r: "SK" + _s(r, HEX, 32)),
    ("digitalocean", lambda r: "dop_v1_" + _s(r, HEX, 64)),
    ("shopify", lambda r: "shpat_" + _s(r, HEX, 32)),
    ("huggingface", lambda r: "hf_" + _s(r, string.ascii_letters, 34)),
    ("linear", lambda r: "lin_api_" + _s(r, LOWER_ALNUM, 40)),
    ("postman", lambda r: "PMAK-" + _s(r, HEX, 24) + "-" + _s(r, HEX, 34)),
    ("databricks", lambda r: "dapi" + _s(r, HEX, 32)),
    ("doppler", lambda r: "dp.pt." + _s(r, LOWER_ALNUM, 43)),
    ("age", lambda r: "AGE-SECRET-KEY-1" + _s(r, B32, 58)),
    ("grafana-sa", lambda r: "glsa_" + _s(r, ALNUM, 32) + "_" + _s(r, HEX, 8)),
    ("square", lambda r: "sq0atp-" + _s(r, ALNUM + "_-", 22)),
    ("jwt", _jwt),
    ("private-key", _pem),
]

# values gitleaks must not report: allowlisted shapes, stopwords, low entropy
DECOYS = [
    lambda r: "AKIAIOSFODNN7EXAMPLE",
    lambda r: "${" + r.choice(["API_KEY", "TOKEN", "SECRET"]) + "}",
    lambda r: "{{ .Values.apiKey }}",
    lambda r: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    lambda r: "example" + _s(r, LOWER_ALNUM, 16),
    lambda r: "ghp_" + "a" * 36,
    lambda r: "true",
    lambda r: "/usr/local/share/" + _s(r, string.ascii_lowercase, 10),
    lambda r: "1234567890abcdef1234567890abcdef",
    lambda r: "changeme" + _s(r, string.digits, 4),
]

_ASSIGN = re2.compile(r"^\(\?i\)\[\\w\.-\]\{0,50\}\?\(\?:([a-z0-9_|.\\ -]+)\)")
_GROUP = re2.compile(r"\(((?:\[[^\]]+\]\{\d+(?:,\d+)?\}|[a-zA-Z0-9_-]|\\-)+)\)\(\?:\[\\x60")
_PIECE = re2.compile(r"\[([^\]]+)\]\{(\d+)(?:,(\d+))?\}|(\\-|[a-zA-Z0-9_-])")


def _class_chars(spec: str) -> str:
    out = ""
    i = 0
    while i < len(spec):
        if spec.startswith("\\w", i):
            out += ALNUM + "_"
            i += 2
        elif spec.startswith("\\-", i) or spec.startswith("\\.", i):
            out += spec[i + 1]
            i += 2
        elif i + 2 < len(spec) and spec[i + 1] == "-":
            out += "".join(chr(c) for c in range(ord(spec[i]), ord(spec[i + 2]) + 1))
            i += 3
        else:
            out += spec[i]
            i += 1
    return out


def assignment_shapes(rules_path: Path) -> list[tuple[str, str, list]]:
    """(rule id, a name its keyword alternation accepts, the secret's pieces) for every rule of
    gitleaks' "<name> = <value>" form whose value is plain character classes."""
    cfg = tomllib.loads(Path(rules_path).read_text())
    shapes = []
    for rule in cfg["rules"]:
        pat = rule.get("regex", "")
        m = _ASSIGN.search(pat)
        g = _GROUP.search(pat)
        if not m or not g:
            continue
        names = [
            n.replace("\\", "")
            for n in m.group(1).split("|")
            if n and "\\" not in n.replace("\\.", "").replace("\\-", "")
        ]
        pieces = []
        for p in _PIECE.finditer(g.group(1)):
            if p.group(1):
                lo = int(p.group(2))
                hi = int(p.group(3) or lo)
                pieces.append((_class_chars(p.group(1)), lo, hi))
            else:
                pieces.append((p.group(4).replace("\\", ""), 1, 1))
        if names and pieces:
            shapes.append((rule["id"], names[0], pieces))
    return shapes


def _from_pieces(rng: random.Random, pieces: list) -> str:
    return "".join(_s(rng, chars, rng.randint(lo, hi)) if len(chars) > 1 else chars for chars, lo, hi in pieces)


def _encode(rng: random.Random, value: str) -> str:
    kind = rng.choice(["b64", "b64url", "hex", "percent", "unicode", "codepoints", "b64b64", "hexb64"])
    if kind == "b64":
        return base64.b64encode(value.encode()).decode()
    if kind == "b64url":
        return base64.urlsafe_b64encode(value.encode()).decode().rstrip("=")
    if kind == "hex":
        return value.encode().hex()
    if kind == "percent":
        return "".join(f"%{b:02X}" if rng.random() < 0.6 else chr(b) for b in value.encode())
    if kind == "unicode":
        return "".join(f"\\u{ord(c):04x}" for c in value)
    if kind == "codepoints":
        return " ".join(f"U+{ord(c):04X}" for c in value)
    if kind == "b64b64":
        return base64.b64encode(base64.b64encode(value.encode())).decode()
    return base64.b64encode(value.encode().hex().encode()).decode()


_FILLER = [
    "def handler(event, context):\n    return {'statusCode': 200, 'body': json.dumps(event)}",
    "for i in range(10):\n    total += compute_checksum(buffer[i])",
    "server {\n  listen 443 ssl;\n  server_name example.internal;\n}",
    "2026-11-27T08:00:01Z INFO request completed path=/api/v1/items status=200 duration_ms=12",
    "SELECT id, name, created_at FROM users WHERE active = true ORDER BY created_at DESC;",
    "const result = await fetch(url, { method: 'POST', headers: { 'Content-Type': 'application/json' } });",
    "# Configuration for the build pipeline\nstages:\n  - test\n  - deploy",
    "import os\nimport sys\nfrom pathlib import Path",
    'func main() {\n\tfmt.Println("hello")\n}',
    "Caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u2014 \u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8 \U0001f600",
    "user_id=42 session=abcdef order_total=19.99 currency=EUR",
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.",
    "very_long_identifier_name_for_testing = another_long_identifier_value_here",
    "checksum: 9b74c9897bac770ffc029102a200c5de sha256sum ok",
]

_TEMPLATES = [
    '{name} = "{secret}"',
    "export {NAME}={secret}",
    "{name}: {secret}",
    '"{name}": "{secret}",',
    'curl -H "Authorization: Bearer {secret}" https://api.internal/v1/me',
    "config.set('{name}', '{secret}')",
    "{NAME}='{secret}' ./run.sh",
    "log: auth failed for token={secret} retrying",
    '<add key="{name}" value="{secret}" />',
    "{secret}",
    '\u212aey = "{secret}"',  # KELVIN SIGN: Go folds it with k
    "\u017fecret_token: {secret}",  # LONG S: Go folds it with s
]


def _snippet(rng: random.Random, shapes: list) -> str:
    lines = [rng.choice(_FILLER) for _ in range(rng.randint(1, 4))]
    kind = rng.random()
    for _ in range(rng.randint(1, 3)):
        name = rng.choice(["api_key", "token", "secret", "auth", "password", "client_secret", "access_key"])
        if kind < 0.15:
            continue  # clean text
        if kind < 0.40:
            _, secret = rng.choice(TOKENS)
            secret = secret(rng)
        elif kind < 0.62 and shapes:
            _, name, pieces = rng.choice(shapes)
            secret = _from_pieces(rng, pieces)
        elif kind < 0.72:
            secret = rng.choice(DECOYS)(rng)
        elif kind < 0.80:
            secret = _s(rng, ALNUM, rng.randint(12, 40))  # generic-api-key with a name, maybe
        else:
            _, secret = rng.choice(TOKENS)
            secret = _encode(rng, secret(rng))
        line = rng.choice(_TEMPLATES).format(name=name, NAME=name.upper(), secret=secret)
        if rng.random() < 0.03:
            line += "  # gitleaks:allow"
        lines.insert(rng.randint(0, len(lines)), line)
    return "\n".join(lines)


def generate(rules_path: Path, n: int, seed: int = 20261127) -> list[tuple[str, str]]:
    """``n`` (name, text) pairs, the same for the same seed and rules file."""
    rng = random.Random(seed)
    shapes = assignment_shapes(rules_path)
    texts = []
    for i in range(n):
        # one text in 25 is long (several KiB), so the engine's block-wise decoding is covered
        parts = [_snippet(rng, shapes) for _ in range(rng.randint(14, 30) if rng.random() < 0.04 else 1)]
        text = "\n".join(parts)
        if rng.random() < 0.5:
            text += "\n"
        texts.append((f"t{i:05d}.txt", text))
    return texts


# The adversarial corpus (issue 14): exfiltration shapes and ordinary traffic, by class.
from tests.support.dlp_shapes import ENCODERS, SECRET_MAKERS, TEXT_ENCODERS, Case, exfiltration, ordinary, secret  # noqa: E402,F401
