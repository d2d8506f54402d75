"""egress DLP (sidecars/egress/dlp.py, dlp_request.py) on small handmade rule files: gitleaks'
semantics case by case, the request scanner's places and encodings, settings, streaming.
Parity with the real binary over the real rules is tests/integration/test_dlp_parity.py."""

from __future__ import annotations

import base64
import gzip
import json
import subprocess
import sys
import zlib
from pathlib import Path

import brotli
import pytest

from tests.support.sidecars import daemon_env, egress_module

dlp = egress_module("dlp")
dr = egress_module("dlp.request")

GHP = "ghp_" + "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5"
AWS = "AKIA" + "QYLPMN5HHHFPZAM2"

RULES = r"""
title = "test rules"

[allowlist]
description = "global"
regexes = ['''^\$\{[A-Z_]+\}$''']
stopwords = ["placeholder"]

[[rules]]
id = "github-pat"
regex = '''ghp_[0-9a-zA-Z]{36}'''
entropy = 3
keywords = ["ghp_"]

[[rules]]
id = "aws-access-token"
regex = '''\b((?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16})\b'''
entropy = 3
keywords = ["akia", "asia"]
[[rules.allowlists]]
regexes = ['''.+EXAMPLE$''']

[[rules]]
id = "generic-api-key"
regex = '''(?i)(?:key|token|secret)(?:[ \t\w.-]{0,20})[\s'"]{0,3}(?:=|:)[\x60'"\s=]{0,5}([\w.=-]{10,150})(?:[\x60'"\s;]|$)'''
entropy = 3.5
keywords = ["key", "token", "secret"]
[[rules.allowlists]]
regexTarget = "line"
regexes = ['''--mount=type=secret''']
[[rules.allowlists]]
condition = "AND"
regexTarget = "match"
regexes = ['''(?i)public''']
stopwords = ["zzz"]

[[rules]]
id = "grouped"
regex = '''(?i)(acme)_(?:id|key)=([a-z0-9]{12})'''
secretGroup = 2
keywords = ["acme_"]

[[rules]]
id = "config-file-only"
regex = '''password=(\S+)'''
path = '''(?i)\.ini$'''
keywords = ["password"]
"""


@pytest.fixture(scope="module")
def rules_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("rules") / "gitleaks.toml"
    p.write_text(RULES)
    return p


@pytest.fixture(scope="module")
def scanner(rules_file: Path):
    return dlp.Scanner.load(rules_file)


@pytest.fixture(scope="module")
def compat(rules_file: Path, tmp_path_factory: pytest.TempPathFactory):
    """gitleaks' own semantics: no deviation (the parity test's reference)."""
    return dlp.Scanner.load(rules_file, db_path=tmp_path_factory.mktemp("compat") / "db", deviations=())


def found(scanner, text: str, **kw) -> list[tuple[str, str]]:
    return sorted((f.rule_id, f.secret.decode()) for f in scanner.scan(text.encode(), **kw))


# --- gitleaks semantics -----------------------------------------------------------------------------


def test_a_token_is_found_with_its_line(scanner) -> None:
    fs = scanner.scan(f"first line\nexport T={GHP}\n".encode())
    assert [(f.rule_id, f.line, f.secret.decode()) for f in fs] == [("github-pat", 2, GHP)]


def test_keyword_prefilter_is_case_insensitive(scanner) -> None:
    assert found(scanner, "acme_ID=abcdef123456") == [("grouped", "abcdef123456")]
    assert found(scanner, "ACME_KEY=ABCDEF123456") == [("grouped", "ABCDEF123456")]


def test_secret_group_picks_the_named_group(scanner) -> None:
    # without secretGroup gitleaks takes the first non-empty group ("acme"); with 2, the value
    assert found(scanner, "acme_id=zx81q7w0pl3m") == [("grouped", "zx81q7w0pl3m")]


def test_low_entropy_is_not_reported(scanner) -> None:
    assert found(scanner, "ghp_" + "a" * 36) == []
    assert found(scanner, "api_key = aaaaaaaaaaaaaaaaaaaa") == []


def test_rule_allowlist_regex(scanner) -> None:
    assert found(scanner, "AKIAQYLPMN5HHEXAMPLE") == []
    assert found(scanner, AWS) == [("aws-access-token", AWS)]


def test_global_allowlist_regex_and_stopword(scanner) -> None:
    assert found(scanner, "token = ${API_TOKEN}") == []
    assert found(scanner, "token = my-placeholder-Xq9zT2") == []
    assert found(scanner, "token = my-Q1w2E3r4T5y6-Xq9zT2") == [("generic-api-key", "my-Q1w2E3r4T5y6-Xq9zT2")]


def test_line_target_allowlist(scanner, compat) -> None:
    assert found(compat, "RUN --mount=type=secret,id=x token=Q1w2E3r4T5y6U7i8") == []
    # deviation "line-allowlist-on-match": the agent writes the rest of the line
    assert found(scanner, "RUN --mount=type=secret,id=x token=Q1w2E3r4T5y6U7i8") == [
        ("generic-api-key", "Q1w2E3r4T5y6U7i8")
    ]
    assert found(scanner, "RUN --mount=type=secret,id=x") == []


def test_and_condition_needs_every_check(scanner) -> None:
    # regex "public" on the match AND stopword "zzz" in the secret: both, or it is reported
    assert found(scanner, "token = publicQ1w2E3r4zzzT5y6U7") == []
    assert found(scanner, "token = publicQ1w2E3r4T5y6U7i8") == [("generic-api-key", "publicQ1w2E3r4T5y6U7i8")]
    assert found(scanner, "token = Q1w2E3r4zzzT5y6U7") == [("generic-api-key", "Q1w2E3r4zzzT5y6U7")]


def test_gitleaks_allow_comment(scanner, compat) -> None:
    assert found(compat, f"T={GHP}  # gitleaks:allow") == []
    # deviation "no-inline-allow": the marker is the agent's to write, so egress ignores it
    assert found(scanner, f"T={GHP}  # gitleaks:allow") == [("github-pat", GHP)]


def test_generic_gives_way_to_a_specific_rule_on_the_same_line(scanner) -> None:
    assert found(scanner, f"token = {GHP}") == [("github-pat", GHP)]


def test_path_rules_never_run_on_requests(scanner) -> None:
    assert found(scanner, "password=hunter2hunter2") == []


def test_disabled_rules_are_not_reported(scanner) -> None:
    assert found(scanner, f"{GHP} {AWS}", disabled={"github-pat"}) == [("aws-access-token", AWS)]


@pytest.mark.parametrize(
    "encode",
    [
        lambda s: base64.b64encode(s.encode()).decode(),
        lambda s: base64.urlsafe_b64encode(s.encode()).decode().rstrip("="),
        lambda s: s.encode().hex(),
        lambda s: "".join(f"%{b:02x}" for b in s.encode()),
        lambda s: "".join(f"\\u{ord(c):04x}" for c in s),
        lambda s: base64.b64encode(base64.b64encode(s.encode())).decode(),
    ],
    ids=["base64", "base64url", "hex", "percent", "unicode", "base64-twice"],
)
def test_encoded_secrets_are_decoded_and_located(scanner, encode) -> None:
    blob = encode(GHP)
    text = f"line one\ndata: {blob} end\n"
    fs = scanner.scan(text.encode())
    assert [(f.rule_id, f.secret.decode(), f.line) for f in fs] == [("github-pat", GHP, 2)]
    # located in the original text: the encoded run
    assert text.encode()[fs[0].start : fs[0].end] == blob.encode()


def test_decoding_stops_at_the_cli_depth(rules_file: Path) -> None:
    blob = GHP
    for _ in range(6):
        blob = base64.b64encode(blob.encode()).decode()
    deep = dlp.Scanner.load(rules_file)
    assert found(deep, blob) == []  # six layers: past gitleaks' default depth of 5
    assert found(deep, base64.b64decode(blob).decode()) == [("github-pat", GHP)]


def test_non_ascii_text_around_a_secret(scanner) -> None:
    assert found(scanner, f"caf\u00e9 \u65e5\u672c {AWS} \U0001f600") == [("aws-access-token", AWS)]


def test_finding_repr_carries_no_secret(scanner) -> None:
    (f,) = scanner.scan(GHP.encode())
    assert GHP not in repr(f) and GHP not in str(f)


def test_invalid_utf8_is_scanned_not_refused(scanner) -> None:
    assert found(scanner, "\udcff".encode("utf-8", "surrogateescape").decode("latin-1") + AWS) == [
        ("aws-access-token", AWS)
    ]
    assert [f.rule_id for f in scanner.scan(b"\xff\xfe" + AWS.encode())] == ["aws-access-token"]


# --- rules loader -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "toml, message",
    [
        ('[[rules]]\nid = "x"\nregex = "("\n', "rule x: regex does not compile"),
        ('[[rules]]\nid = ""\nregex = "a"\n', "rule id is missing"),
        ('[[rules]]\nid = "x"\n', "both regex and path are empty"),
        ('[[rules]]\nid = "x"\nregex = "(a)"\nsecretGroup = 3\n', "invalid secretGroup 3"),
        (
            '[[rules]]\nid = "x"\nregex = "a"\n[[rules.allowlists]]\ncondition = "XOR"\nregexes=["a"]\n',
            "unknown allowlist condition",
        ),
        (
            '[[rules]]\nid = "x"\nregex = "a"\n[[rules.allowlists]]\nregexTarget = "file"\nregexes=["a"]\n',
            "unknown allowlist regexTarget",
        ),
        ('[[rules]]\nid = "x"\nregex = "a"\n[[rules.allowlists]]\ndescription = "empty"\n', "at least one of"),
        ('[[allowlists]]\ntargetRules = ["nope"]\nregexes = ["a"]\n', "target rule id 'nope' does not exist"),
        ("not = = toml", "not valid TOML"),
    ],
)
def test_bad_rules_files_fail_with_one_line(tmp_path: Path, toml: str, message: str) -> None:
    p = tmp_path / "r.toml"
    p.write_text(toml)
    with pytest.raises(dlp.RulesError) as e:
        dlp.load_rules(p)
    assert message in str(e.value) and "\n" not in str(e.value) and str(p) in str(e.value)


def test_target_rules_allowlist_applies_to_that_rule_only(tmp_path: Path) -> None:
    p = tmp_path / "r.toml"
    p.write_text(
        RULES.replace("[allowlist]", "[[allowlists]]")
        + "\n[[allowlists]]\ntargetRules = [\"github-pat\"]\nregexes = ['''aB3d''']\n"
    )
    s = dlp.Scanner.load(p)
    assert found(s, f"{GHP} {AWS}") == [("aws-access-token", AWS)]


def test_serialized_database_round_trip_and_staleness(tmp_path: Path) -> None:
    p = tmp_path / "r.toml"
    p.write_text(RULES)
    # the image build's own command (sidecars/Dockerfile)
    r = subprocess.run(
        [sys.executable, "-m", "dlp", "compile", str(p)], env=daemon_env("egress"), capture_output=True, text=True
    )
    assert r.returncode == 0 and "5 rules" in r.stdout, r.stderr
    rules = dlp.load_rules(p)
    assert dlp.load_database(rules, dlp.database_path(p)) is not None
    # what the database does not hold (comments, allowlists, the deviations that change no regex)
    # leaves it valid; another regex makes it stale, and the scanner then compiles its own
    p.write_text(RULES + "\n# edited\n")
    assert dlp.load_database(dlp.load_rules(p), dlp.database_path(p)) is not None
    allow_inline = tuple(d for d in dlp.DEVIATIONS if d != "no-inline-allow")
    assert dlp.load_database(dlp.load_rules(p, allow_inline), dlp.database_path(p)) is not None
    assert dlp.load_database(dlp.load_rules(p, ()), dlp.database_path(p)) is None  # delimiters differ
    p.write_text(RULES.replace("ghp_[0-9a-zA-Z]{36}", "ghp_[0-9a-zA-Z]{35,36}"))
    assert dlp.load_database(dlp.load_rules(p), dlp.database_path(p)) is None  # other rules: recompile
    assert found(dlp.Scanner.load(p), GHP) == [("github-pat", GHP)]


# --- requests ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rs(scanner):
    return dr.RequestScanner(scanner)


def where(v) -> list[tuple[str, str]]:
    return sorted((h.rule_id, h.where) for h in v.hits)


def test_clean_request_passes(rs) -> None:
    v = rs.scan_request(
        "/v1/items?page=2", [("Host", "api.internal"), ("Accept", "*/*")], b'{"name": "widget"}', dr.Settings()
    )
    assert not v.blocked and v.reason() == ""


def test_secret_in_path_query_and_any_header(rs) -> None:
    assert where(rs.scan_head(f"/repos/{GHP}/x", [])) == [("github-pat", "url path")]
    assert where(rs.scan_head("/x?t=" + GHP.replace("_", "%5F"), [])) == [("github-pat", "query")]
    v = rs.scan_head("/", [("Host", "h"), ("User-Agent", f"curl {AWS}"), ("X-Custom", GHP)])
    # a standard header is named, any other by its index: the agent chose its name
    assert where(v) == [("aws-access-token", "header User-Agent"), ("github-pat", "header 3")]
    assert v.reason().startswith("dlp: blocked: ") and GHP not in v.reason()


def test_json_form_and_multipart_bodies(rs) -> None:
    body = json.dumps({"auth": {"token": GHP.replace("_", "\\u005f")}}).encode()
    assert ("github-pat", "body json") in where(rs.scan_body(body, [("Content-Type", "application/json")]))
    form = f"user=a&key={GHP}".encode()
    assert "github-pat" in {
        h.rule_id for h in rs.scan_body(form, [("Content-Type", "application/x-www-form-urlencoded")]).hits
    }
    mp = (
        b'--XyZ\r\nContent-Disposition: form-data; name="note"\r\n\r\nhello\r\n'
        b'--XyZ\r\nContent-Disposition: form-data; name="f"; filename="creds.txt"\r\n\r\n'
        + AWS.encode()
        + b"\r\n--XyZ--\r\n"
    )
    v = rs.scan_body(mp, [("Content-Type", "multipart/form-data; boundary=XyZ")])
    assert ("aws-access-token", "body part 2") in where(v)  # an index, never the agent's file name


@pytest.mark.parametrize(
    "coding, pack",
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda b: zlib.compress(b)[2:-4]),  # raw deflate, as some clients send it
        ("br", brotli.compress),
        ("gzip, br", lambda b: brotli.compress(gzip.compress(b))),
    ],
)
def test_content_encodings_are_undone(rs, coding, pack) -> None:
    v = rs.scan_body(pack(f"x={GHP}".encode()), [("Content-Encoding", coding)])
    assert where(v) == [("github-pat", "body")]


def test_fail_closed_over_the_cap_and_undecodable(rs) -> None:
    small = dr.Settings(max_body_bytes=1000)
    v = rs.scan_body(b"a" * 1001, [], small)
    assert v.blocked and v.reason().startswith("dlp: blocked: cannot scan body") and not v.hits
    bomb = gzip.compress(b"\0" * 100_000)
    assert rs.scan_body(bomb, [("Content-Encoding", "gzip")], small).cannot_scan
    assert rs.scan_body(b"not gzip at all", [("Content-Encoding", "gzip")]).cannot_scan
    assert rs.scan_body(gzip.compress(b"hello")[:-6], [("Content-Encoding", "gzip")]).cannot_scan
    assert rs.scan_body(b"hello", [("Content-Encoding", "zstd")]).cannot_scan  # not zstd data
    assert rs.scan_body(b"hello", [("Content-Encoding", "compress")]).cannot_scan  # no such decoder


def test_body_false_and_disabled_rules(rs) -> None:
    assert not rs.scan_body(GHP.encode(), [], dr.Settings(body=False)).blocked
    assert rs.scan_head(f"/{GHP}", [], dr.Settings(body=False)).blocked  # body only: head still scanned
    assert not rs.scan_head(f"/{GHP}", [], dr.Settings(disabled_rules=("github-pat",))).blocked


def test_stream_finds_a_secret_split_across_chunks(rs) -> None:
    text = b"x" * 40_000 + b" " + GHP.encode() + b" " + b"y" * 40_000
    cut = 40_000 + 10
    for size in (7, 1000, cut):
        st = rs.body_stream([])
        sent = b""
        for i in range(0, len(text), size):
            sent += st.feed(text[i : i + size])
            if st.verdict.blocked:
                break
        sent += st.finish()
        assert st.verdict.blocked and where(st.verdict) == [("github-pat", "body")]
        assert GHP[:8].encode() not in sent  # no part of the secret left before the verdict


def test_stream_passes_everything_when_clean(rs) -> None:
    text = bytes(range(32, 127)) * 2000
    st = rs.body_stream([])
    sent = b"".join(st.feed(text[i : i + 4096]) for i in range(0, len(text), 4096)) + st.finish()
    assert sent == text and not st.verdict.blocked


def test_stream_encoded_and_over_cap(rs) -> None:
    st = rs.body_stream([("Content-Encoding", "gzip")])
    packed = gzip.compress(f"a={GHP}".encode())
    assert st.feed(packed[:10]) == b"" and st.feed(packed[10:]) == b""
    assert st.finish() == b"" and st.verdict.hits
    st = rs.body_stream([], dr.Settings(max_body_bytes=100))
    st.feed(b"a" * 60)
    st.feed(b"a" * 60)
    assert st.verdict.cannot_scan


def test_find_all_follows_go_on_empty_matches() -> None:
    import re2

    # Go: regexp.MustCompile("a*").FindAllStringIndex("baaac", -1) == [[0 0] [1 4] [5 5]]
    assert [s[0] for s in dlp.find_all(re2.compile(b"a*"), b"baaac")] == [(0, 0), (1, 4), (5, 5)]
    # an empty match steps over a whole rune, not one byte of it
    assert [s[0] for s in dlp.find_all(re2.compile(b"x*"), "\u00e9".encode())] == [(0, 0), (2, 2)]


def test_case_folding_beyond_ascii_is_not_lost_by_the_prefilter(scanner) -> None:
    # Go's (?i) folds KELVIN SIGN with k and its ToLower maps it to k; Hyperscan's caseless
    # matching is ASCII only, so such text must skip the prefilter rather than miss a finding.
    assert found(scanner, "\u212aey = Q1w2E3r4T5y6U7i8") == [("generic-api-key", "Q1w2E3r4T5y6U7i8")]


def test_line_wise_run_search_equals_the_whole_text_search(scanner) -> None:
    """The engine searches for encoded runs only on lines where Hyperscan sees a decodable-looking
    spot, and skips a decoding pass when there is none; on random texts dense in near-encodings
    that must give exactly what the whole-text search gives."""
    import random

    rng = random.Random(7)
    pieces = [
        "%4",
        "%41",
        "%zz",
        "\\u0041",
        "\\\\U004a",
        "U+0041",
        " ",
        "\n",
        "\n",
        "=",
        "==",
        "-",
        "_",
        "/",
        "+",
        "deadbeef" * 5,
        "Z2hwXzEy",
        "aGVsbG8gd29ybGQ",
        "word",
        "x" * 17,
        "\u00e9",
        "0123456789abcdef",
    ]
    for i in range(300):
        printable = "".join(chr(rng.randint(9, 126)) for _ in range(rng.randint(12, 30))).encode()
        encoded = [
            base64.b64encode(printable).decode(),
            base64.urlsafe_b64encode(printable).decode().rstrip("="),
            printable.hex(),
        ]
        alphabet = rng.sample(pieces + encoded, rng.randint(1, 4)) + ["word ", "\n", "the_identifier "]
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(50, 3000))).encode()
        if i % 3 == 0:
            text = text.replace(b"U+", b"V+")  # line-wise only applies without "U+"

        def passes(block_hits, text=text):
            out, segs = dlp.decode_pass(text, [], {}, block_hits)
            return out, [(s.original, s.encoded, s.decoded, s.value, s.encodings) for s in segs]

        whole = passes(None)
        assert passes(scanner._decodable_ends) == whole
        if whole[1]:
            assert scanner._decodable_ends(text) != [], "a decodable run the Hyperscan test missed"


def test_names_in_answers_are_printable_and_short(rs) -> None:
    v = rs.scan_head("/", [("X-\x1b[31mEvil" + "n" * 100, GHP), ("X-Raw", "\udcff\ud800 " + AWS)])
    assert all(" " <= c <= "~" for h in v.hits for c in h.where)
    assert max(len(h.where) for h in v.hits) <= 7 + 64
    assert {h.rule_id for h in v.hits} == {"github-pat", "aws-access-token"}


def _gitleaks_location(nl, raw, start, end):
    """detect/location.go's loop, transcribed: the reference for the engine's bisections."""
    if not nl:
        nl = [len(raw)]
    prev, line_set, line_no, sl_idx, el_idx = 0, False, 0, 0, 0
    for n, nli in enumerate(nl):
        if prev <= start < nli:
            line_set, line_no, sl_idx, el_idx = True, n, prev, nli
        if prev < end <= nli:
            el_idx = nli
        prev = nli
    if not line_set:
        line_no, sl_idx = len(nl), 0
        i = end
        while i < len(raw) and raw[i] not in (0x0A, 0x0D):
            i += 1
        el_idx = i
    return line_no, sl_idx, el_idx


def test_location_equals_gitleaks_loop() -> None:
    import random

    rng = random.Random(3)
    for _ in range(3000):
        raw = "".join(rng.choice("ab\n\r") for _ in range(rng.randint(0, 30))).encode()
        nl = [i for i, c in enumerate(raw) if c == 0x0A]
        start = rng.randint(0, len(raw))
        end = rng.randint(start, len(raw))
        assert dlp._location(nl, raw, start, end) == _gitleaks_location(nl, raw, start, end), (raw, start, end)


def test_stream_with_body_false_passes_any_encoding(rs) -> None:
    st = rs.body_stream([("Content-Encoding", "compress")], dr.Settings(body=False))
    assert st.feed(b"abc") == b"abc" and st.finish() == b"" and not st.verdict.blocked
    st = rs.body_stream([("Content-Encoding", "compress")])
    assert st.feed(b"abc") == b"" and st.verdict.cannot_scan


def test_stream_decodes_a_base64_run_longer_than_the_window(rs) -> None:
    """A base64 run longer than the window, with binary around the secret: whatever offset a
    window starts at inside the run, the part holding the secret still decodes."""
    import random

    rng = random.Random(4)
    blob = base64.b64encode(rng.randbytes(30_000) + b" " + GHP.encode() + b" " + rng.randbytes(30_000))
    text = b"y" * 20_001 + b" " + blob + b" end\n"
    for size in (999, 4096):
        st = rs.body_stream([("Content-Type", "text/plain")])
        for i in range(0, len(text), size):
            st.feed(text[i : i + size])
            if st.verdict.blocked:
                break
        st.finish()
        assert ("github-pat", "body") in where(st.verdict), size


# --- the database and the CLI (the image build's `python -m dlp compile`) ------------------------------


def test_the_database_lives_next_to_its_rules(rules_file: Path) -> None:
    assert dlp.database_path(rules_file) == rules_file.with_name(rules_file.name + ".hsdb")


def test_a_rule_without_a_regex_leaves_the_others_in_the_database(tmp_path: Path) -> None:
    p = tmp_path / "r.toml"
    p.write_text(
        "[[rules]]\nid = \"files-only\"\npath = '''\\.pem$'''\n"
        + RULES.split("[allowlist]")[0]
        + "[[rules]]\nid = \"github-pat\"\nregex = '''ghp_[0-9a-zA-Z]{36}'''\nkeywords = [\"ghp_\"]\n"
    )
    assert found(dlp.Scanner.load(p), f"x {GHP}") == [("github-pat", GHP)]


def test_codepoint_spelled_secrets_are_found(scanner) -> None:
    # gitleaks' "U+0067 U+0068 ..." decoding: a pattern the engine's codecs do not share
    spelled = " ".join(f"U+{ord(c):04X}" for c in GHP)
    assert found(scanner, f"note: {spelled}\n") == [("github-pat", GHP)]


def test_cli_compile_saves_a_database_that_loads(tmp_path: Path, capsys) -> None:
    main = egress_module("dlp.__main__").main
    p = tmp_path / "r.toml"
    p.write_text(RULES)
    out = tmp_path / "out.hsdb"
    assert main(["compile", str(p), str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"dlp: 5 rules, 8 keywords, 0 in byte mode -> {out}"
    rules = dlp.load_rules(p)
    loaded = dlp.load_database(rules, out)
    assert loaded is not None and loaded[1] == []
    assert found(dlp.Scanner(rules, *loaded), GHP) == [("github-pat", GHP)]
    assert main(["compile", str(p)]) == 0 and dlp.load_database(rules, dlp.database_path(p)) is not None
    assert (out.stat().st_mode & 0o777) == 0o644  # the image's egress user reads it


def test_cli_scan_prints_findings_as_json_lines(rules_file: Path, tmp_path: Path, capsys) -> None:
    main = egress_module("dlp.__main__").main
    f = tmp_path / "a.txt"
    f.write_bytes(f"one\nT={GHP}\n".encode())
    assert main(["scan", str(rules_file), str(f), str(f)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines == [{"file": str(f), "rule": "github-pat", "line": 2, "secret": GHP}] * 2
    assert main(["scan", str(rules_file), str(f)]) == 0 and len(capsys.readouterr().out.splitlines()) == 1


@pytest.mark.parametrize("argv", [[], ["compile"], ["scan", "rules.toml"], ["frobnicate", "a", "b"]])
def test_cli_usage_on_bad_arguments(argv: list[str], capsys) -> None:
    assert egress_module("dlp.__main__").main(argv) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("usage: python -m dlp compile RULES [OUT] | python -m dlp scan RULES FILE")
        and err.count("\n") == 1
    )


# --- archives: every member read, within the bomb limits -------------------------------------------------


def _tar(members: list[tuple[str, bytes | None, str]]) -> bytes:
    """A tar of (name, content, link target): a regular file when content is not None, else a symlink."""
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for name, content, link in members:
            info = tarfile.TarInfo(name)
            if content is None:
                info.type, info.linkname = tarfile.SYMTYPE, link
                tf.addfile(info)
            else:
                info.size = len(content)
                tf.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def test_tar_links_and_files_after_them_are_read() -> None:
    archive = egress_module("dlp.codecs.archive")
    odd = "caf\udce9"  # a name that is not UTF-8, as tarfile reads it
    tar = _tar([("ln", None, f"/tmp/{GHP}"), (odd, None, odd), (odd + ".txt", AWS.encode(), "")])
    assert archive.members(tar, 1 << 20) == [
        b"ln /tmp/" + GHP.encode(),
        b"caf\xe9 caf\xe9",
        b"caf\xe9.txt\n" + AWS.encode(),
    ]


def test_tar_bomb_limits() -> None:
    archive = egress_module("dlp.codecs.archive")
    errors = egress_module("dlp.errors")
    assert len(archive.members(_tar([(f"f{i}", b"", "") for i in range(archive.MAX_MEMBERS)]), 1 << 20)) == 1000
    with pytest.raises(errors.CannotScan, match="more than 1000 members"):
        archive.members(_tar([(f"f{i}", b"", "") for i in range(archive.MAX_MEMBERS + 1)]), 1 << 20)
    # the cap holds for all members together, and exactly the cap is still scanned
    two = _tar([("a", b"a" * 600, ""), ("b", b"b" * 400, "")])
    assert [len(m) for m in archive.members(two, 1000)] == [602, 402]
    for cap in (999, 601):
        with pytest.raises(errors.CannotScan, match=f"past the {cap}-byte scan cap"):
            archive.members(two, cap)


# --- streams: what is held back, what is released -------------------------------------------------------


def _stream(rs, text: bytes, size: int, headers=(), **kw):
    """Feeds ``text`` in chunks of ``size``: (the stream, what it released, the most it held back)."""
    st = rs.body_stream(list(headers), **kw)
    sent, most = b"", 0
    for i in range(0, len(text), size):
        sent += st.feed(text[i : i + size])
        fed = min(len(text), i + size)
        assert len(sent) <= max(0, fed - dr.STREAM_OVERLAP), "released part of the overlap window"
        most = max(most, fed - len(sent))
    return st, sent + st.finish(), most


@pytest.mark.parametrize(
    "text",
    [
        base64.b64encode(bytes(range(256)) * 400),  # one long run, no line end
        (b"a" * 9000 + b"\n") * 12,  # lines longer than half the overlap
        (b"x" * (dr.STREAM_OVERLAP // 2 - 1) + b"\n") * 10,  # a line end right before each cut
        (b"word " * 2000 + b"\n" + b"QUJD" * 3000 + b"\n") * 4,  # runs that start inside a line
        b"x" * 5000 + b"\n" + b"QUJD" * 20_000,  # a run that starts a few KiB into the window
        b"\n" * 100_000,
    ],
    ids=["base64-run", "long-lines", "newline-at-cut", "runs-in-lines", "run-after-a-line", "newlines"],
)
def test_stream_keeps_the_overlap_and_releases_the_rest(rs, text: bytes) -> None:
    for size in (4096, 40_000):
        st, sent, most = _stream(rs, text, size)
        assert sent == text and not st.verdict.blocked
        assert most <= dr.STREAM_OVERLAP + dr.STREAM_RELEASE + size  # never the whole body held


def test_stream_scans_what_is_left_at_the_end(rs) -> None:
    for headers in ([], [("Content-Type", "application/json")]):
        st, sent, _ = _stream(rs, f'{{"a": "{GHP}"}}'.encode(), 5, headers)
        assert (
            sent == b""
            and where(st.verdict) == [("github-pat", "body")]
            or ("github-pat", "body json") in where(st.verdict)
        )


def test_stream_knows_what_the_site_handed_out(scanner) -> None:
    prov = egress_module("dlp.provenance")
    store = prov.Provenance()
    store.learn("api.example.com", [], f"issued {GHP}".encode())
    rsp = dr.RequestScanner(scanner, provenance=store)
    for headers in ([], [("Content-Type", "application/json")]):
        body = f'{{"t": "{GHP}"}}'.encode()
        st, sent, _ = _stream(rsp, body, 7, headers, site="api.example.com")
        assert sent == body and not st.verdict.blocked
        st, sent, _ = _stream(rsp, body, 7, headers, site="paste.example.net")
        assert st.verdict.blocked


# --- codecs: each decoder finds its class, and ordinary text of that class passes -----------------------


def test_html_references_decimal_hex_and_named(rs) -> None:
    for spell in (lambda b: f"&#{b};", lambda b: f"&#x{b:X};", lambda b: f"&#X{b:x}"):
        assert where(rs.scan_body(("<p>" + "".join(spell(b) for b in GHP.encode()) + "</p>").encode(), [])) == [
            ("github-pat", "body")
        ]
    # binary spelled in references stays binary: gzip data, byte by byte, is inflated
    packed = gzip.compress(f"t={GHP}".encode())
    for spell in (lambda b: f"&#{b};", lambda b: f"&#x{b:x};"):
        assert where(rs.scan_body("".join(spell(b) for b in packed).encode(), [])) == [("github-pat", "body")]
    # fullwidth letters spelled in references: decoded, then NFKC makes them ASCII
    fullwidth = "".join(f"&#x{ord(c) + 0xFEE0:X};" for c in GHP)
    assert where(rs.scan_body(f"<p>{fullwidth}</p>".encode(), [])) == [("github-pat", "body")]
    ordinary = (
        "<p>it&#x27;s a&#x2F;b &#256;&#x100; &amp; &eacute;&#8364; &#1114111; &#1114112; &#xD800; &#xDFFF;"
        " &#9999999;</p>"
    )
    assert not rs.scan_body(ordinary.encode(), []).blocked


# --- rules: the allowlist-precedence deviation anchors every branch, and only where it should ------------


@pytest.mark.parametrize(
    "regex, anchored",
    [
        ("(?i)^true|false|null$", "(?i)^(?:true|false|null)$"),  # gitleaks' own global allowlist
        ("(?i)(?-s)^x|y$", "(?i)(?-s)^(?:x|y)$"),
        ("^(?:a)|(b)$", "^(?:(?:a)|(b))$"),
        ("^[a]|b$", "^(?:[a]|b)$"),
        ("^x[]a]|b$", "^(?:x[]a]|b)$"),  # "]" first in a class is a literal
        ("^x[^]a]|b$", "^(?:x[^]a]|b)$"),
        ("^x[]]|b$", "^(?:x[]]|b)$"),
        ("^x[^]]|b$", "^(?:x[^]]|b)$"),
        ("^((a))|b$", "^(?:((a))|b)$"),
        ("^\\(|b$", "^(?:\\(|b)$"),  # an escaped parenthesis opens no group
        ("^(a|b)$", "^(a|b)$"),  # alternation inside a group: already anchored
        ("^(a)(b|c)$", "^(a)(b|c)$"),
        ("^[|]x$", "^[|]x$"),
        ("^[a|]x$", "^[a|]x$"),
        ("^x[]|]yz$", "^x[]|]yz$"),
        ("^x[^]|]yz$", "^x[^]|]yz$"),
        ("^a\\|b$", "^a\\|b$"),
        ("^a|b\\$", "^a|b\\$"),  # not anchored at the end
        ("(?:^a|b$)", "(?:^a|b$)"),
        ("a|b", "a|b"),
    ],
    ids=lambda v: "".join(c if c.isalnum() else "-" for c in v),
)
def test_anchor_whole(regex: str, anchored: str) -> None:
    assert egress_module("dlp.rules").anchor_whole(regex) == anchored


# --- the query: pagination tokens judged by every rule but the generic one --------------------------------


def test_query_pagination_and_plain_parameters(rs) -> None:
    generic = "Q1w2E3r4T5y6U7i8O9p0"
    assert where(rs.scan_head(f"/x?a=1&api_key={generic}", [])) == [("generic-api-key", "query")]
    assert not rs.scan_head(f"/x?pageToken={generic}==&cursor={generic}", []).blocked  # padded, too
    assert where(rs.scan_head(f"/x?cursor={GHP}", [])) == [("github-pat", "query")]  # a specific rule still


def test_percent_u_code_points(rs) -> None:
    spelled = "".join(f"%u{ord(c):04X}" for c in GHP)
    assert where(rs.scan_head(f"/x?q={spelled}", [])) == [("github-pat", "query")]
    assert not rs.scan_head("/caf%u00e9?q=%u20AC%uD800%uDFFF%uFFFF", []).blocked
