"""Egress's pure policy code (sidecars/egress/routes.py, request_target.py, credentials.py,
scrubber.py): routes.yaml validation, request matching, credential headers and secret scrubbing, including across stream chunk boundaries."""

from __future__ import annotations

import base64
import itertools
import random

import pytest

from tests.support.sidecars import egress_module

R = egress_module("routes")
T = egress_module("request_target")
C = egress_module("credentials")
S = egress_module("scrubber")

EXAMPLE = """
version: 1
bottle: dev
dlp: {body: true, disabled_rules: [], max_body_bytes: 8388608}
routes:
  - host: api.anthropic.com
    ports: [443]
    methods: [POST, get]
    paths: ["/v1/*"]
    schemes: [https]
    auth:
      scheme: header
      header: x-api-key
      token_env: ANTHROPIC_API_KEY
    dlp: {body: true, disabled_rules: [], max_body_bytes: 8388608}
    model_tools: []
    once: null
  - host: "*.example.com"
    ports: [443, 8443]
    methods: []
    paths: []
    schemes: [http, https]
    auth: null
    dlp: {body: true, disabled_rules: [], max_body_bytes: 8388608}
    model_tools: []
    once: null
  - host: Plain.Example.ORG
    ports: [80]
    methods: []
    paths: []
    schemes: [HTTP]
    auth: null
    dlp: {body: true, disabled_rules: [], max_body_bytes: 8388608}
    model_tools: []
    once: null
"""

DLP = "{body: true, disabled_rules: [], max_body_bytes: 8388608}"
FULL = {
    "host": "a.com",
    "ports": "[443]",
    "methods": "[]",
    "paths": "[]",
    "schemes": "[https]",
    "auth": "null",
    "dlp": DLP,
    "model_tools": "[]",
    "once": "null",
}


def one_route(**changes: str | None) -> str:
    """routes.yaml with one fully explicit route; a value of None leaves that key out."""
    parts = dict(FULL)
    for k, v in changes.items():
        if v is None:
            parts.pop(k)
        else:
            parts[k] = v
    return (
        "version: 1\nbottle: b\ndlp: {body: true, disabled_rules: [], max_body_bytes: 8388608}\nroutes: [{"
        + ", ".join(f"{k}: {v}" for k, v in parts.items())
        + "}]"
    )


@pytest.fixture
def policy(tmp_path):
    path = tmp_path / "routes.yaml"
    path.write_text(EXAMPLE)
    return R.load_routes(str(path))


def test_load_routes_reads_every_field(policy) -> None:
    assert policy.bottle == "dev" and len(policy.routes) == 3
    api, wild, plain = policy.routes
    assert api.host == "api.anthropic.com" and api.ports == (443,)
    assert api.methods == ("POST", "GET") and api.paths == ("/v1/*",)
    assert api.auth == R.Auth(scheme="header", token_env="ANTHROPIC_API_KEY", header="x-api-key")
    assert api.schemes == ("https",)
    assert wild.host == "*.example.com" and wild.ports == (443, 8443) and wild.auth is None
    assert wild.schemes == ("http", "https")
    assert plain.host == "plain.example.org" and plain.methods == () and plain.paths == ()
    assert plain.schemes == ("http",)


@pytest.mark.parametrize(
    "text, key",
    [
        (
            "version: 2\nbottle: b\ndlp: {body: true, disabled_rules: [], max_body_bytes: 8388608}\nroutes: []",
            "version",
        ),
        ("bottle: b\ndlp: {body: true, disabled_rules: [], max_body_bytes: 8388608}\nroutes: []", "version"),
        ("version: 1\nbottle: b\ndlp: {body: true, disabled_rules: [], max_body_bytes: 8388608}", "routes"),
        ("version: 1\nbottle: b\nroutes: []", "dlp"),
        ("version: 1\nbottle: b\ndlp: {body: true, disabled_rules: []}\nroutes: []", "dlp.max_body_bytes"),
        (one_route(dlp=None), "routes[0].dlp"),
        (one_route(dlp="{body: true, max_body_bytes: 5}"), "routes[0].dlp.disabled_rules"),
        (one_route(dlp="{body: 1, disabled_rules: [], max_body_bytes: 5}"), "routes[0].dlp.body"),
        (one_route(dlp="{body: true, disabled_rules: jwt, max_body_bytes: 5}"), "routes[0].dlp.disabled_rules"),
        (one_route(dlp="{body: true, disabled_rules: [], max_body_bytes: 0}"), "routes[0].dlp.max_body_bytes"),
        (one_route(dlp="{body: true, disabled_rules: [], max_body_bytes: 5, scan: all}"), "routes[0].dlp.scan"),
        ("version: 1\nroutes: []", "bottle"),
        ("version: 1\nbottle: b\ndlp: {body: true, disabled_rules: [], max_body_bytes: 8388608}\nroutes: {}", "routes"),
        (
            "version: 1\nbottle: ''\ndlp: {body: true, disabled_rules: [], max_body_bytes: 8388608}\nroutes: []",
            "bottle",
        ),
        (
            "version: 1\nbottle: b\ndlp: {body: true, disabled_rules: [], max_body_bytes: 8388608}\nroutes: []\nextra: 1",
            "extra",
        ),
        (one_route(host=None), "routes[0].host"),
        (one_route(ports=None), "routes[0].ports"),
        (one_route(methods=None), "routes[0].methods"),
        (one_route(paths=None), "routes[0].paths"),
        (one_route(schemes=None), "routes[0].schemes"),
        (one_route(auth=None), "routes[0].auth"),
        (one_route(host="'a.*.com'"), "routes[0].host"),
        (one_route(host="'has space.com'"), "routes[0].host"),
        (one_route(host="42"), "routes[0].host"),
        (one_route(host="a..com"), "routes[0].host"),
        (one_route(methods="[1]"), "routes[0].methods"),
        (one_route(paths="[1]"), "routes[0].paths"),
        (one_route(schemes="[1]"), "routes[0].schemes"),
        (
            "version: true\nbottle: b\ndlp: {body: true, disabled_rules: [], max_body_bytes: 8388608}\nroutes: []",
            "version",
        ),
        (one_route(host="''"), "routes[0].host"),
        (one_route(ports="[0]"), "routes[0].ports"),
        (one_route(ports="[65536]"), "routes[0].ports"),
        (one_route(host="'a.com:8443'"), "routes[0].host"),
        (one_route(ports="443"), "routes[0].ports"),
        (one_route(ports="[70000]"), "routes[0].ports"),
        (one_route(ports="[true]"), "routes[0].ports"),
        (one_route(ports="[]"), "routes[0].ports"),
        (one_route(methods="GET"), "routes[0].methods"),
        (one_route(methods="['GE T']"), "routes[0].methods"),
        (one_route(paths="['v1/*']"), "routes[0].paths"),
        (one_route(schemes="[ftp]"), "routes[0].schemes"),
        (one_route(schemes="[]"), "routes[0].schemes"),
        (one_route(prots="[1]"), "routes[0].prots"),
        (one_route(auth="{scheme: magic, token_env: T}"), "routes[0].auth.scheme"),
        (one_route(auth="{scheme: bearer}"), "routes[0].auth.token_env"),
        (one_route(auth="{scheme: bearer, token_env: 'a-b'}"), "routes[0].auth.token_env"),
        (one_route(auth="{scheme: header, token_env: T}"), "routes[0].auth.header"),
        (one_route(auth="{scheme: bearer, token_env: T, header: x}"), "routes[0].auth.header"),
        (
            "version: 1\nbottle: b\ndlp: {body: true, disabled_rules: [], max_body_bytes: 8388608}\nroutes: [ok, 1]",
            "routes[0]",
        ),
    ],
)
def test_bad_routes_raise_one_line_value_errors_naming_the_key(text, key) -> None:
    with pytest.raises(ValueError) as info:
        R.parse_routes(text, source="r.yaml")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"r.yaml: {key}: ") or msg.startswith(f"r.yaml: {key}.")


def test_path_globs_may_start_with_a_star() -> None:
    p = R.parse_routes(one_route(paths="['*', '*.json']"))
    assert p.routes[0].paths == ("*", "*.json") and R.match(p, "GET", "https", "a.com", 443, "/x").allowed


def test_port_bounds() -> None:
    assert R.parse_routes(one_route(ports="[1, 65535]")).routes[0].ports == (1, 65535)


def test_one_route_helper_is_valid_and_ipv6_hosts_are_not_ports() -> None:
    assert R.parse_routes(one_route()).routes[0].host == "a.com"
    assert R.parse_routes(one_route(host="'::1'")).routes[0].host == "::1"
    assert R.parse_routes(one_route(host="'[2001:db8::1]'")).routes[0].host == "2001:db8::1"


def test_invalid_yaml_and_missing_file_are_value_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match="invalid YAML"):
        R.parse_routes("version: [1\n")
    with pytest.raises(ValueError, match="cannot read"):
        R.load_routes(str(tmp_path / "absent.yaml"))
    with pytest.raises(ValueError, match="expected a mapping"):
        R.parse_routes("")
    with pytest.raises(ValueError, match="cannot read"):
        R.load_routes(str(tmp_path))  # a folder


@pytest.mark.parametrize(
    "method, scheme, host, port, path, allowed, route",
    [
        ("POST", "https", "api.anthropic.com", 443, "/v1/messages", True, 0),
        ("post", "https", "API.Anthropic.COM.", 443, "/v1/messages?beta=true", True, 0),
        ("GET", "https", "api.anthropic.com", 443, "/v1/models", True, 0),
        ("DELETE", "https", "api.anthropic.com", 443, "/v1/messages", False, None),
        ("POST", "https", "api.anthropic.com", 443, "/v2/messages", False, None),
        ("POST", "https", "api.anthropic.com", 8443, "/v1/messages", False, None),
        ("POST", "http", "api.anthropic.com", 443, "/v1/messages", False, None),
        ("POST", "https", "evil-api.anthropic.com", 443, "/v1/messages", False, None),
        ("GET", "https", "www.example.com", 443, "/anything", True, 1),
        ("PUT", "https", "a.b.example.com", 8443, "/", True, 1),
        ("GET", "https", "example.com", 443, "/", False, None),  # the apex is not a subdomain
        ("GET", "https", "badexample.com", 443, "/", False, None),
        ("GET", "http", "plain.example.org", 80, "/x", True, 2),
        ("GET", "http", "plain.example.org", 443, "/x", False, None),
    ],
)
def test_match(policy, method, scheme, host, port, path, allowed, route) -> None:
    d = R.match(policy, method, scheme, host, port, path)
    assert (d.allowed, d.route_index) == (allowed, route)
    assert d.reason


def test_block_reasons_name_the_rule_that_failed(policy) -> None:
    assert R.match(policy, "GET", "https", "nope.org", 443, "/").reason == "no route for host nope.org"
    assert "port 22" in R.match(policy, "GET", "https", "api.anthropic.com", 22, "/v1/x").reason
    assert "method DELETE" in R.match(policy, "DELETE", "https", "api.anthropic.com", 443, "/v1/x").reason
    assert "path /v2" in R.match(policy, "GET", "https", "api.anthropic.com", 443, "/v2").reason
    assert "scheme http" in R.match(policy, "GET", "http", "api.anthropic.com", 443, "/v1/x").reason


PATH_REASONS = {
    "request target is not a path starting with '/'",
    "path is percent-encoded too many times",
    "path has ';' parameters",
    "path has a backslash",
    "path has control characters",
    "path has '.' or '..' segments",
}


@pytest.mark.parametrize(
    "path, why",
    [
        ("/v1/../admin", "segments"),
        ("/v1/%2e%2e/admin", "segments"),
        ("/v1/%2E%2E", "segments"),
        ("/v1/./x", "segments"),
        ("/v1/%252e%252e/admin", "segments"),  # double-encoded
        ("/v1/%25252e%25252e/admin", "segments"),  # triple-encoded
        ("/v1/%2e%2e%2fadmin", "segments"),  # encoded slash hides the segment
        ("/v1%2f..%2fadmin", "segments"),
        ("/v1/..\\x", "backslash"),
        ("/v1/%5c..%5cadmin", "backslash"),
        ("/v1/..;/admin", "';'"),
        ("/v1/x;jsessionid=1", "';'"),
        ("/v1/x%3bparam", "';'"),
        ("/v1/x%00y", "control"),
        ("/v1/x%7fy", "control"),
        ("http://other.io/v1/x", "not a path"),
        ("/v1/%2525252525252e", "too many times"),
    ],
)
def test_ambiguous_paths_never_slip_past_a_path_glob(policy, path, why) -> None:
    d = R.match(policy, "GET", "https", "api.anthropic.com", 443, path)
    assert not d.allowed and why in d.reason, d.reason
    assert d.reason in PATH_REASONS
    # Refused on routes without a path list too: the server still resolves them.
    assert not R.match(policy, "GET", "https", "www.example.com", 443, path).allowed


@pytest.mark.parametrize(
    "path, why",
    [("/v1%2fadmin", "encoded '/'"), ("/v1/a%2Fb", "encoded '/'"), ("/v1/%2541", "more than once")],
)
def test_paths_that_a_server_may_split_otherwise_are_refused_only_where_paths_are_limited(policy, path, why) -> None:
    d = R.match(policy, "GET", "https", "api.anthropic.com", 443, path)
    assert not d.allowed and why in d.reason, d.reason
    assert R.match(policy, "GET", "https", "www.example.com", 443, path).allowed  # npm's @scope%2fname


def test_plain_percent_encoding_still_matches(policy) -> None:
    assert R.match(policy, "GET", "https", "api.anthropic.com", 443, "/v1/a%20b%41?q=%2f..").allowed


@pytest.mark.parametrize(
    "method, overrides, allowed",
    [
        ("POST", [], True),
        ("POST", ["GET"], True),
        ("POST", ["get"], True),
        ("POST", ["DELETE"], False),
        ("GET", ["POST", "PUT"], False),
    ],
)
def test_method_overrides_must_be_allowed_methods_too(policy, method, overrides, allowed) -> None:
    d = R.match(policy, method, "https", "api.anthropic.com", 443, "/v1/x", overrides)
    assert d.allowed == allowed, d.reason
    if not allowed:
        assert "method override" in d.reason
    # A route that allows any method does not care.
    assert R.match(policy, method, "https", "www.example.com", 443, "/x", overrides).allowed


def test_method_overrides_are_read_from_every_known_header_and_the_query() -> None:
    headers = [
        ("X-HTTP-Method-Override", "DELETE"),
        ("x-http-method", "PUT"),
        ("X-Method-Override", "PATCH"),
        ("X-Other", "GET"),
    ]
    assert T.method_overrides(headers, "a=1&_method=TRACE") == ["DELETE", "PUT", "PATCH", "TRACE"]
    assert T.method_overrides([], "") == []


def test_first_matching_route_wins_and_schemes_can_open_plain_http() -> None:
    p = R.parse_routes(
        "version: 1\nbottle: b\ndlp: {body: true, disabled_rules: [], max_body_bytes: 8388608}\nroutes:\n"
        "  - {host: h.io, ports: [80], methods: [], paths: ['/a/*'], schemes: [http, https], auth: {scheme: bearer, token_env: T}, dlp: {body: true, disabled_rules: [], max_body_bytes: 8388608}, model_tools: [], once: null}\n"
        "  - {host: h.io, ports: [80], methods: [], paths: [], schemes: [http], auth: null, dlp: {body: true, disabled_rules: [], max_body_bytes: 8388608}, model_tools: [], once: null}\n"
    )
    assert R.match(p, "GET", "http", "h.io", 80, "/a/b").route_index == 0
    assert R.match(p, "GET", "http", "h.io", 80, "/b").route_index == 1
    assert R.could_allow(p, "h.io", 80) and not R.could_allow(p, "h.io", 443) and not R.could_allow(p, "x.io", 80)
    assert not R.match(p, "GET", "https", "h.io", 80, "/b").allowed  # route 1 lists http only


def test_empty_routes_block_everything() -> None:
    p = R.parse_routes(
        "version: 1\nbottle: b\ndlp: {body: true, disabled_rules: [], max_body_bytes: 8388608}\nroutes: []"
    )
    assert not R.match(p, "GET", "https", "a.com", 443, "/").allowed


def route_with(scheme: str, header: str | None = None) -> R.Route:
    return R.Route(host="h.io", ports=(443,), auth=R.Auth(scheme=scheme, token_env="TOK", header=header))


def test_auth_headers_for_each_scheme() -> None:
    env = {"TOK": "s3cret"}
    assert C.auth_headers(route_with("bearer"), env) == {"Authorization": "Bearer s3cret"}
    assert C.auth_headers(route_with("header", "x-api-key"), env) == {"x-api-key": "s3cret"}
    basic = C.auth_headers(route_with("basic"), {"TOK": "me:pa:ss"})
    assert basic == {"Authorization": "Basic " + base64.b64encode(b"me:pa:ss").decode()}
    assert C.auth_headers(R.Route(host="h.io", ports=(443,)), env) == {}


@pytest.mark.parametrize("env", [{}, {"TOK": ""}])
def test_missing_credential_is_a_distinct_error_naming_the_variable(env) -> None:
    with pytest.raises(C.CredentialMissing) as info:
        C.auth_headers(route_with("bearer"), env)
    assert info.value.env_name == "TOK" and "TOK" in str(info.value)
    assert not isinstance(info.value, ValueError)


def test_basic_credential_without_colon_is_a_credential_error() -> None:
    with pytest.raises(C.CredentialError, match="user:password") as info:
        C.auth_headers(route_with("basic"), {"TOK": "nocolon"})
    assert info.value.env_name == "TOK"


def test_secret_values_cover_the_forms_an_upstream_could_echo() -> None:
    assert C.secret_values(route_with("bearer"), {"TOK": "abc"}) == ["abc"]
    values = C.secret_values(route_with("basic"), {"TOK": "user:hunter22"})
    assert set(values) == {"user:hunter22", base64.b64encode(b"user:hunter22").decode(), "hunter22"}
    # The password is everything after the first colon.
    assert "pa:ss" in C.secret_values(route_with("basic"), {"TOK": "me:pa:ss"})


@pytest.mark.parametrize(
    "authority, host_headers, sni, claimed, why",
    [
        (None, ["api.io"], "api.io", None, None),
        (None, ["API.io:443"], None, None, None),
        (None, [], None, None, None),
        ("api.io:443", ["api.io"], "api.io", None, None),
        ("api.io", [], None, None, None),
        (None, ["other.io"], None, "other.io", "Host header 'other.io' does not match the destination api.io:443"),
        ("other.io", ["api.io"], "api.io", "other.io", "request authority 'other.io' does not match"),
        ("other.io:443", [], None, "other.io", "request authority"),
        (None, ["api.io:8443"], None, "api.io", "Host header names port 8443 but the destination is api.io:443"),
        ("api.io:80", [], None, "api.io", "request authority names port 80"),
        (None, ["api.io", "other.io"], None, "api.io", "more than one Host header"),
        (None, ["user@other.io"], None, "api.io", "is not a host[:port]"),
        (None, ["api.io:http"], None, "api.io", "is not a host[:port]"),
        (None, ["api.io"], "other.io", "other.io", "TLS SNI 'other.io'"),
    ],
)
def test_authority_problem(authority, host_headers, sni, claimed, why) -> None:
    problem = T.authority_problem("api.io", 443, [authority] if authority else [], host_headers, sni)
    if why is None:
        assert problem is None
    else:
        reason, who = problem
        assert why in reason and who == claimed


def test_authority_problem_with_ipv6() -> None:
    assert T.authority_problem("::1", 8080, [], ["[::1]:8080"], None) is None
    assert T.authority_problem("::1", 8080, ["[::1]:8080"], [], None) is None
    assert T.authority_problem("::1", 8080, [], ["[::1]:80"], None)[0].startswith("Host header names port 80")


def test_an_absolute_url_in_the_path_is_an_authority_claim_and_never_a_path(policy) -> None:
    assert T.target_authorities("", "http://other.io/x") == ["other.io"]
    assert T.target_authorities("api.io", "/x?u=http://other.io/") == ["api.io"]
    assert T.target_authorities("", "http:///x") == ["?"]
    assert T.authority_problem("api.io", 443, T.target_authorities("", "http://other.io/x"), [], None)[1] == "other.io"
    d = R.match(policy, "GET", "https", "api.anthropic.com", 443, "https://api.anthropic.com/v1/x")
    assert not d.allowed and "not a path" in d.reason
    assert T.split_authority("[::1") is None and T.split_authority("[::1]x") is None
    assert T.split_authority("::1") == ("::1", None) and T.split_authority("h.io:0") is None


def test_scrubber_redacts_secrets_and_their_encoded_forms() -> None:
    sc = S.Scrubber(["tok/en+1", b"xyz"])
    data = b'a tok/en+1 b tok%2Fen%2B1 c "tok\\/en+1"? d xyz'
    out = sc.scrub(data)
    assert b"tok" not in out and b"xyz" not in out
    assert out.count(S.REDACTED) == 4
    assert out.startswith(b"a [redacted by egress] b [redacted by egress] c")
    assert sc.scrub(b"nothing here") == b"nothing here"
    assert sc.scrub_text("Bearer xyz") == "Bearer [redacted by egress]"
    assert not S.Scrubber([]) and S.Scrubber([]).scrub(b"xyz") == b"xyz"


def test_overlapping_secrets_leave_no_fragment() -> None:
    sc = S.Scrubber(["abcd", "cdef"])
    assert sc.scrub(b"..abcdef..") == b".." + S.REDACTED + b".."
    assert sc.scrub(b"abcdabcd") == S.REDACTED + S.REDACTED


def stream_through(sc: S.Scrubber, data: bytes, cuts: list[int]) -> bytes:
    st = sc.stream()
    out = []
    bounds = [0, *cuts, len(data)]
    for a, b in itertools.pairwise(bounds):
        if b > a:
            out.extend(st(data[a:b]))
    out.extend(st(b""))
    assert all(out), "the stream callable must never yield an empty chunk"
    return b"".join(out)


def test_stream_scrubber_catches_a_secret_split_at_every_boundary() -> None:
    sc = S.Scrubber(["sk-SECRET-123"])
    data = b'data: {"echo": "Bearer sk-SECRET-123"}\n\n'
    expected = sc.scrub(data)
    assert b"SECRET" not in expected
    for i, j in itertools.combinations(range(1, len(data)), 2):
        assert stream_through(sc, data, [i, j]) == expected


def test_stream_scrubber_matches_one_shot_scrubbing_on_random_chunking() -> None:
    rnd = random.Random(7)
    secrets = ["abcabd", "bda", "zz", "x%y"]
    sc = S.Scrubber(secrets)
    alphabet = b"abcdxyz%"
    for _ in range(300):
        data = bytes(rnd.choice(alphabet) for _ in range(rnd.randint(0, 60)))
        data += rnd.choice(secrets).encode() + bytes(rnd.choice(alphabet) for _ in range(5))
        cuts = sorted(rnd.sample(range(1, len(data)), k=min(len(data) - 1, rnd.randint(0, 8))))
        assert stream_through(sc, data, cuts) == sc.scrub(data), (data, cuts)


def test_stream_scrubber_passes_harmless_data_at_once() -> None:
    st = S.Scrubber(["SECRET"]).stream()
    assert st(b"hello ") == [b"hello "]
    assert st(b"world SEC") == [b"world "]  # only the possible start of the secret waits
    assert st(b"OND") == [b"SECOND"]
    assert st(b"") == []


TOKEN = "sk-live/AbC+123_xyz~"


@pytest.mark.parametrize(
    "form",
    [
        TOKEN,
        base64.b64encode(TOKEN.encode()).decode(),
        base64.urlsafe_b64encode(TOKEN.encode()).decode(),
        base64.b64encode(TOKEN.encode()).decode().rstrip("="),
        TOKEN.encode().hex(),
        TOKEN.encode().hex().upper(),
        "".join(f"\\u{ord(c):04x}" for c in TOKEN),
        "".join(f"\\u{ord(c):04X}" for c in TOKEN),
        "sk-live%2FAbC%2B123_xyz~",
        "sk-live%2fAbC%2b123_xyz~",
        "".join(f"%{b:02X}" for b in TOKEN.encode()),
        "".join(f"%{b:02x}" for b in TOKEN.encode()),
        "sk-live\\/AbC+123_xyz~",
    ],
)
def test_scrubber_redacts_every_encoded_form_of_the_secret(form) -> None:
    sc = S.Scrubber([TOKEN])
    out = sc.scrub(f'{{"echo": "{form}"}}'.encode())
    assert form.encode() not in out and S.REDACTED in out, out
    assert out.startswith(b'{"echo": "') and out.endswith(b'"}')


@pytest.mark.parametrize("prefix", [b"", b"a", b"ab", b"abc", b"abcd"])
@pytest.mark.parametrize("encode", [base64.b64encode, base64.urlsafe_b64encode])
def test_scrubber_finds_the_secret_inside_a_longer_base64_text_at_any_alignment(prefix, encode) -> None:
    sc = S.Scrubber([TOKEN])
    blob = encode(prefix + b'{"key": "' + TOKEN.encode() + b'"} and more')
    out = sc.scrub(blob)
    assert S.REDACTED in out
    # No run of base64 text that is left decodes to the secret's middle, at any offset.
    for run in out.split(S.REDACTED):
        std = run.replace(b"-", b"+").replace(b"_", b"/").rstrip(b"=")
        for start in range(4):
            part = std[start:]
            part = part[: len(part) - len(part) % 4]
            assert TOKEN[2:-2].encode() not in base64.b64decode(part)


def test_scrubber_leaves_unrelated_text_alone() -> None:
    sc = S.Scrubber([TOKEN])
    text = b"plain text with hex 00ff and base64 QUJD and %41 escapes \\u0041"
    assert sc.scrub(text) == text


# --- tests that pin down details mutation testing found loose ------------------------------------


def test_every_auth_scheme_parses() -> None:
    for auth in (
        "{scheme: basic, token_env: T}",
        "{scheme: bearer, token_env: T}",
        "{scheme: header, header: x-k, token_env: T}",
    ):
        assert R.parse_routes(one_route(auth=auth)).routes[0].auth.token_env == "T"


def test_routes_and_auth_are_immutable() -> None:
    import dataclasses

    policy = R.parse_routes(one_route())
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.bottle = "x"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        R.match(policy, "GET", "https", "a.com", 443, "/").allowed = False  # type: ignore[misc]

    route = R.parse_routes(one_route(auth="{scheme: bearer, token_env: T}")).routes[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        route.host = "other.com"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        route.auth.token_env = "OTHER"  # type: ignore[misc]


@pytest.mark.parametrize(
    "host, ok",
    [
        ("a.example.com", True),
        ("a.b.example.com", True),
        (".example.com", False),
        ("example.com", False),
        ("aexample.com", False),
    ],
)
def test_wildcard_matches_any_subdomain_and_nothing_else(host, ok) -> None:
    route = R.parse_routes(one_route(host="'*.example.com'")).routes[0]
    assert route.matches_host(host) == ok


def test_missing_credential_message_says_where() -> None:
    with pytest.raises(C.CredentialMissing, match="^TOK is not set in the sidecars container$"):
        C.auth_headers(route_with("bearer"), {})


def test_block_reasons_are_exact(policy) -> None:
    def m(*args):
        return R.match(policy, *args)

    assert (
        m("GET", "https", "api.anthropic.com", 22, "/v1/x").reason == "no route for port 22 of host api.anthropic.com"
    )
    assert (
        m("DELETE", "https", "api.anthropic.com", 443, "/v1/x").reason
        == "no route for method DELETE on api.anthropic.com:443"
    )
    assert (
        m("GET", "https", "api.anthropic.com", 443, "/v2/a%20b?q").reason
        == "no route for path /v2/a b on api.anthropic.com:443"
    )
    assert m("POST", "https", "api.anthropic.com", 443, "/v1/x", ["PUT", "PATCH"]).reason == (
        "method override to PUT/PATCH not allowed on api.anthropic.com:443"
    )
    assert m("GET", "http", "api.anthropic.com", 443, "/v1/x").reason == "route 0 does not allow scheme http"
    assert m("GET", "https", "api.anthropic.com", 443, "/v1/x").reason == "route 0 (api.anthropic.com)"


def test_a_path_glob_is_matched_without_the_query() -> None:
    p = R.parse_routes(one_route(paths="['/health']"))
    assert R.match(p, "GET", "https", "a.com", 443, "/health?verbose=1").allowed
    assert not R.match(p, "GET", "https", "a.com", 443, "/healthz").allowed


def test_stream_scrubber_holds_the_earliest_possible_start_of_a_secret() -> None:
    # "SESE" could start "SESECRET" at its first "SE" and at its second: holding only the later
    # one would let "SE" out and the rest ("SECRET") no longer match.
    sc = S.Scrubber(["SESECRET"])
    assert stream_through(sc, b"xxSESECRETyy", [6]) == b"xx" + S.REDACTED + b"yy"


def test_stream_scrubber_catches_every_encoded_form_split_before_its_last_byte() -> None:
    sc = S.Scrubber([TOKEN])
    for form in sc.secrets:
        data = b"xx" + form + b"yy"
        for cut in (2, 3, len(form) + 1, len(form)):
            assert stream_through(sc, data, [cut]) == b"xx" + S.REDACTED + b"yy", (form, cut)


def test_stream_scrubber_is_empty_after_its_end() -> None:
    st = S.Scrubber(["SECRET"]).stream()
    assert st(b"a SEC") == [b"a "]
    assert st(b"") == [b"SEC"] and st(b"") == []


def test_scrub_text_keeps_undecodable_bytes() -> None:
    sc = S.Scrubber(["xyz1"])
    assert sc.scrub_text("caf\udce9 xyz1") == "caf\udce9 [redacted by egress]"


def test_an_ambiguous_path_may_still_pass_a_route_without_path_limits_on_the_same_host() -> None:
    p = R.parse_routes(
        "version: 1\nbottle: b\ndlp: {body: true, disabled_rules: [], max_body_bytes: 8388608}\nroutes:\n"
        "  - {host: a.com, ports: [443], methods: [], paths: ['/v1/*'], schemes: [https], auth: null, dlp: {body: true, disabled_rules: [], max_body_bytes: 8388608}, model_tools: [], once: null}\n"
        "  - {host: a.com, ports: [443], methods: [], paths: [], schemes: [https], auth: null, dlp: {body: true, disabled_rules: [], max_body_bytes: 8388608}, model_tools: [], once: null}\n"
    )
    d = R.match(p, "GET", "https", "a.com", 443, "/v1%2fx")
    assert d.allowed and d.route_index == 1


def test_percent_decoding_rounds_stop_at_the_limit(policy) -> None:
    three = "/x/%252541"  # %252541 -> %2541 -> %41 -> A
    four = "/x/%25252541"
    assert R.match(policy, "GET", "https", "www.example.com", 443, three).allowed
    d = R.match(policy, "GET", "https", "www.example.com", 443, four)
    assert not d.allowed and "too many times" in d.reason


def test_invalid_utf8_in_a_path_is_matched_not_an_error(policy) -> None:
    assert R.match(policy, "GET", "https", "www.example.com", 443, "/x%ff%fe").allowed
    assert T.path_problem("/x%ff") is None


def test_overlapping_occurrences_of_one_secret_leave_no_fragment() -> None:
    sc = S.Scrubber(["abab"])
    assert sc.scrub(b"-ababab-") == b"-" + S.REDACTED + b"-"


def test_authority_details() -> None:
    assert T.target_authorities("", "*") == [] and T.target_authorities("", "/a://b") == []
    assert T.target_authorities("", "x?u=http://other.io/") == []
    assert T.authority_problem("x.io", 443, [], ["X.IO"], None) is None
    assert T.split_authority("h.io:1") == ("h.io", 1) and T.split_authority("h.io:65535") == ("h.io", 65535)
    assert T.split_authority("h.io:65536") is None


def test_invalid_utf8_on_a_route_that_limits_paths(policy) -> None:
    assert R.match(policy, "GET", "https", "api.anthropic.com", 443, "/v1/%ff").allowed
