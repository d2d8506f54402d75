"""The egress policy module (sidecars/egress/routes.py): routes.yaml validation, request matching,
credential headers and secret scrubbing, including across stream chunk boundaries."""

from __future__ import annotations

import base64
import itertools
import random

import pytest

from tests.sidecar_modules import egress_module

R = egress_module("routes")

EXAMPLE = """
version: 1
bottle: dev
routes:
  - host: api.anthropic.com
    ports: [443]
    methods: [POST, get]
    paths: ["/v1/*"]
    auth:
      scheme: header
      header: x-api-key
      token_env: ANTHROPIC_API_KEY
  - host: "*.example.com"
    ports: [443, 8443]
  - host: Plain.Example.ORG
    ports: [80]
    methods: []
    paths: []
"""


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
    assert api.schemes == ("https",)  # a route with a credential is https-only by default
    assert wild.host == "*.example.com" and wild.ports == (443, 8443) and wild.auth is None
    assert wild.schemes == ("http", "https")
    assert plain.host == "plain.example.org" and plain.methods == () and plain.paths == ()


@pytest.mark.parametrize(
    "text, key",
    [
        ("version: 2\nroutes: []", "version"),
        ("routes: []", "version"),
        ("version: 1", "routes"),
        ("version: 1\nroutes: {}", "routes"),
        ("version: 1\nbottle: ''\nroutes: []", "bottle"),
        ("version: 1\nroutes: []\nextra: 1", "extra"),
        ("version: 1\nroutes: [{ports: [443]}]", "routes[0].host"),
        ("version: 1\nroutes: [{host: 'a.*.com'}]", "routes[0].host"),
        ("version: 1\nroutes: [{host: 'has space.com'}]", "routes[0].host"),
        ("version: 1\nroutes: [{host: a.com, ports: 443}]", "routes[0].ports"),
        ("version: 1\nroutes: [{host: a.com, ports: [70000]}]", "routes[0].ports"),
        ("version: 1\nroutes: [{host: a.com, ports: [true]}]", "routes[0].ports"),
        ("version: 1\nroutes: [{host: a.com, ports: []}]", "routes[0].ports"),
        ("version: 1\nroutes: [{host: a.com, methods: GET}]", "routes[0].methods"),
        ("version: 1\nroutes: [{host: a.com, methods: ['GE T']}]", "routes[0].methods"),
        ("version: 1\nroutes: [{host: a.com, paths: ['v1/*']}]", "routes[0].paths"),
        ("version: 1\nroutes: [{host: a.com, schemes: [ftp]}]", "routes[0].schemes"),
        ("version: 1\nroutes: [{host: a.com, prots: [1]}]", "routes[0].prots"),
        ("version: 1\nroutes: [{host: a.com, auth: {scheme: magic, token_env: T}}]", "routes[0].auth.scheme"),
        ("version: 1\nroutes: [{host: a.com, auth: {scheme: bearer}}]", "routes[0].auth.token_env"),
        ("version: 1\nroutes: [{host: a.com, auth: {scheme: bearer, token_env: 'a-b'}}]", "routes[0].auth.token_env"),
        ("version: 1\nroutes: [{host: a.com, auth: {scheme: header, token_env: T}}]", "routes[0].auth.header"),
        ("version: 1\nroutes: [{host: a.com, auth: {scheme: bearer, token_env: T, header: x}}]", "routes[0].auth.header"),
        ("version: 1\nroutes: [ok, 1]", "routes[0]"),
    ],
)
def test_bad_routes_raise_one_line_value_errors_naming_the_key(text, key) -> None:
    with pytest.raises(ValueError) as info:
        R.parse_routes(text, source="r.yaml")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("r.yaml") and key in msg


def test_invalid_yaml_and_missing_file_are_value_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match="invalid YAML"):
        R.parse_routes("version: [1\n")
    with pytest.raises(ValueError, match="cannot read"):
        R.load_routes(str(tmp_path / "absent.yaml"))
    with pytest.raises(ValueError, match="expected a mapping"):
        R.parse_routes("")


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
    d = policy.match(method, scheme, host, port, path)
    assert (d.allowed, d.route_index) == (allowed, route)
    assert d.reason


def test_block_reasons_name_the_rule_that_failed(policy) -> None:
    assert policy.match("GET", "https", "nope.org", 443, "/").reason == "no route for host nope.org"
    assert "port 22" in policy.match("GET", "https", "api.anthropic.com", 22, "/v1/x").reason
    assert "method DELETE" in policy.match("DELETE", "https", "api.anthropic.com", 443, "/v1/x").reason
    assert "path /v2" in policy.match("GET", "https", "api.anthropic.com", 443, "/v2").reason
    assert "scheme http" in policy.match("GET", "http", "api.anthropic.com", 443, "/v1/x").reason


@pytest.mark.parametrize("path", ["/v1/../admin", "/v1/%2e%2e/admin", "/v1/%2E%2E", "/v1/./x", "/v1/..\\x"])
def test_dot_segments_never_slip_past_a_path_glob(policy, path) -> None:
    d = policy.match("GET", "https", "api.anthropic.com", 443, path)
    assert not d.allowed and "segments" in d.reason


def test_first_matching_route_wins_and_schemes_can_open_plain_http() -> None:
    p = R.parse_routes(
        "version: 1\nroutes:\n"
        "  - {host: h.io, ports: [80], paths: ['/a/*'], schemes: [http, https], auth: {scheme: bearer, token_env: T}}\n"
        "  - {host: h.io, ports: [80]}\n"
    )
    assert p.match("GET", "http", "h.io", 80, "/a/b").route_index == 0
    assert p.match("GET", "http", "h.io", 80, "/b").route_index == 1
    assert p.could_allow("h.io", 80) and not p.could_allow("h.io", 443) and not p.could_allow("x.io", 80)
    assert R.parse_routes("version: 1\nroutes: [{host: h.io}]").routes[0].ports == (443,)


def test_empty_routes_block_everything() -> None:
    p = R.parse_routes("version: 1\nbottle: b\nroutes: []")
    assert not p.match("GET", "https", "a.com", 443, "/").allowed


def route_with(scheme: str, header: str | None = None) -> R.Route:
    return R.Route(host="h.io", ports=(443,), auth=R.Auth(scheme=scheme, token_env="TOK", header=header))


def test_auth_headers_for_each_scheme() -> None:
    env = {"TOK": "s3cret"}
    assert R.auth_headers(route_with("bearer"), env) == {"Authorization": "Bearer s3cret"}
    assert R.auth_headers(route_with("header", "x-api-key"), env) == {"x-api-key": "s3cret"}
    basic = R.auth_headers(route_with("basic"), {"TOK": "me:pa:ss"})
    assert basic == {"Authorization": "Basic " + base64.b64encode(b"me:pa:ss").decode()}
    assert R.auth_headers(R.Route(host="h.io", ports=(443,)), env) == {}


@pytest.mark.parametrize("env", [{}, {"TOK": ""}])
def test_missing_credential_is_a_distinct_error_naming_the_variable(env) -> None:
    with pytest.raises(R.CredentialMissing) as info:
        R.auth_headers(route_with("bearer"), env)
    assert info.value.env_name == "TOK" and "TOK" in str(info.value)
    assert not isinstance(info.value, ValueError)


def test_basic_credential_without_colon_is_a_credential_error() -> None:
    with pytest.raises(R.CredentialError, match="user:password") as info:
        R.auth_headers(route_with("basic"), {"TOK": "nocolon"})
    assert info.value.env_name == "TOK"


def test_secret_values_cover_the_forms_an_upstream_could_echo() -> None:
    assert R.secret_values(route_with("bearer"), {"TOK": "abc"}) == ["abc"]
    values = R.secret_values(route_with("basic"), {"TOK": "user:hunter22"})
    assert set(values) == {"user:hunter22", base64.b64encode(b"user:hunter22").decode(), "hunter22"}


@pytest.mark.parametrize(
    "host, host_header, sni, ok",
    [
        ("api.io", "api.io", "api.io", True),
        ("api.io", "API.io:443", None, True),
        ("api.io", None, None, True),
        ("::1", "[::1]:8080", None, True),
        ("api.io", "other.io", None, False),
        ("api.io", "api.io", "other.io", False),
    ],
)
def test_authority_mismatch(host, host_header, sni, ok) -> None:
    problem = R.authority_mismatch(host, host_header, sni)
    assert (problem is None) == ok
    if not ok:
        assert "other.io" in problem


def test_scrubber_redacts_secrets_and_their_encoded_forms() -> None:
    sc = R.Scrubber(["tok/en+1", b"xyz"])
    data = b'a tok/en+1 b tok%2Fen%2B1 c "tok\\/en+1"? d xyz'
    out = sc.scrub(data)
    assert b"tok" not in out and b"xyz" not in out
    assert out.count(R.REDACTED) == 4
    assert out.startswith(b"a [redacted by egress] b [redacted by egress] c")
    assert sc.scrub(b"nothing here") == b"nothing here"
    assert sc.scrub_text("Bearer xyz") == "Bearer [redacted by egress]"
    assert not R.Scrubber([]) and R.Scrubber([]).scrub(b"xyz") == b"xyz"


def test_overlapping_secrets_leave_no_fragment() -> None:
    sc = R.Scrubber(["abcd", "cdef"])
    assert sc.scrub(b"..abcdef..") == b".." + R.REDACTED + b".."
    assert sc.scrub(b"abcdabcd") == R.REDACTED + R.REDACTED


def stream_through(sc: R.Scrubber, data: bytes, cuts: list[int]) -> bytes:
    st = sc.stream()
    out = []
    bounds = [0, *cuts, len(data)]
    for a, b in zip(bounds, bounds[1:]):
        if b > a:
            out.extend(st(data[a:b]))
    out.extend(st(b""))
    assert all(out), "the stream callable must never yield an empty chunk"
    return b"".join(out)


def test_stream_scrubber_catches_a_secret_split_at_every_boundary() -> None:
    sc = R.Scrubber(["sk-SECRET-123"])
    data = b'data: {"echo": "Bearer sk-SECRET-123"}\n\n'
    expected = sc.scrub(data)
    assert b"SECRET" not in expected
    for i, j in itertools.combinations(range(1, len(data)), 2):
        assert stream_through(sc, data, [i, j]) == expected


def test_stream_scrubber_matches_one_shot_scrubbing_on_random_chunking() -> None:
    rnd = random.Random(7)
    secrets = ["abcabd", "bda", "zz", "x%y"]
    sc = R.Scrubber(secrets)
    alphabet = b"abcdxyz%"
    for _ in range(300):
        data = bytes(rnd.choice(alphabet) for _ in range(rnd.randint(0, 60)))
        data += rnd.choice(secrets).encode() + bytes(rnd.choice(alphabet) for _ in range(5))
        cuts = sorted(rnd.sample(range(1, len(data)), k=min(len(data) - 1, rnd.randint(0, 8))))
        assert stream_through(sc, data, cuts) == sc.scrub(data), (data, cuts)


def test_stream_scrubber_passes_harmless_data_at_once() -> None:
    st = R.Scrubber(["SECRET"]).stream()
    assert st(b"hello ") == [b"hello "]
    assert st(b"world SEC") == [b"world "]  # only the possible start of the secret waits
    assert st(b"OND") == [b"SECOND"]
    assert st(b"") == []
