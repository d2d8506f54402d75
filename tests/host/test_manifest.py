"""Agent and bottle manifests: valid files parse to the expected dataclasses, bad ones give one-line ManifestErrors."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from bottle_contract.policy import Auth as RouteAuth
from bottle_contract.policy import DlpSettings as DlpSpec
from bottle_contract.policy import Route
from bottle_tui.errors import BottleError
from bottle_tui.manifest import (
    AgentSpec,
    BottleSpec,
    GitSpec,
    ManifestError,
    Resources,
    SuperviseSpec,
    default_home,
    load_manifests,
    parse_agent,
    parse_bottle,
)

BOTTLE = Path("bottles/web.md")
AGENT = Path("agents/coder.md")


def doc(front: str, body: str = "") -> str:
    return f"---\n{front.strip(chr(10))}\n---\n{body}"


def bottle_error(front: str) -> ManifestError:
    with pytest.raises(ManifestError) as info:
        parse_bottle(BOTTLE, doc(front))
    return info.value


def agent_error(text: str) -> ManifestError:
    with pytest.raises(ManifestError) as info:
        parse_agent(AGENT, text)
    return info.value


def assert_message(err: ManifestError, path: Path, key: str, *parts: str) -> None:
    message = str(err)
    assert "\n" not in message
    assert isinstance(err, BottleError)
    assert err.path == path and err.key == key
    assert message.startswith(f"{path}: {key}: " if key else f"{path}: "), message
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"


def write(home: Path, rel: str, text: str) -> Path:
    path = home / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --- valid files --------------------------------------------------------------------------------

FULL_BOTTLE = """
name: web
description: >
  Builds the web app.
backend: smolvm
egress:
  routes:
    - host: API.Example.com
      ports: [443, 8443]
      methods: [get, POST]
      paths: ["/v1/*", /health]
      auth: {scheme: bearer, token_env: EXAMPLE_TOKEN}
    - host: "*.cdn.example.com"
    - host: hooks.example.com
      auth: {scheme: header, header: X-Hook-Key, token_env: HOOK_KEY}
      dlp: {body: false, disabled_rules: [jwt], max_body_bytes: 1024}
git:
  upstream: git@git.example.com:team/web.git
  branch: develop
  credentials_env: GIT_TOKEN
supervise: {enabled: false, timeout_seconds: 60}
env:
  ZETA: 1
  DEBUG: true
  LEVEL: info
  RATIO: 0.5
dlp:
  disabled_rules: [generic-api-key]
resources: {cpus: 0.5, memory: 512m, pids: 256}
"""


def test_full_bottle_parses_to_dataclasses() -> None:
    spec = parse_bottle(BOTTLE, doc(FULL_BOTTLE, "# notes\n"))
    assert spec == BottleSpec(
        name="web",
        path=BOTTLE,
        backend="smolvm",
        description="Builds the web app.",
        routes=(
            Route(
                "api.example.com",
                (443, 8443),
                ("GET", "POST"),
                ("/v1/*", "/health"),
                RouteAuth("bearer", "EXAMPLE_TOKEN", None),
                ("https",),
                DlpSpec(disabled_rules=("generic-api-key",)),
            ),
            Route(
                "*.cdn.example.com",
                (80, 443),
                (),
                (),
                None,
                ("http", "https"),
                DlpSpec(disabled_rules=("generic-api-key",)),
            ),
            # A route's dlp over the bottle's: body and the cap replace it, disabled rules add to it.
            Route(
                "hooks.example.com",
                (80, 443),
                (),
                (),
                RouteAuth("header", "HOOK_KEY", "X-Hook-Key"),
                ("https",),
                DlpSpec(body=False, disabled_rules=("generic-api-key", "jwt"), max_body_bytes=1024),
            ),
        ),
        git=GitSpec("git@git.example.com:team/web.git", "develop", "GIT_TOKEN"),
        supervise=SuperviseSpec(enabled=False, timeout_seconds=60),
        env=(("DEBUG", "true"), ("LEVEL", "info"), ("RATIO", "0.5"), ("ZETA", "1")),
        dlp=DlpSpec(disabled_rules=("generic-api-key",)),
        resources=Resources(cpus=0.5, memory_mib=512, pids=256),
    )
    hash(spec)


def test_minimal_bottle_gets_defaults_and_name_from_file() -> None:
    spec = parse_bottle(BOTTLE, doc("description: small"))
    assert (spec.name, spec.backend, spec.routes, spec.git, spec.env) == ("web", "docker", (), None, ())
    assert spec.supervise == SuperviseSpec() and spec.dlp == DlpSpec() and spec.resources == Resources()


def test_egress_workers_default_to_auto_and_take_a_count() -> None:
    assert parse_bottle(BOTTLE, doc("description: small")).egress_workers == "auto"
    assert parse_bottle(BOTTLE, doc("egress:\n  workers: 3\n  routes: []")).egress_workers == 3
    assert parse_bottle(BOTTLE, doc("egress:\n  workers: auto")).egress_workers == "auto"


def test_empty_front_matter_is_a_bottle_with_defaults() -> None:
    assert parse_bottle(BOTTLE, "---\n---\n").name == "web"


@pytest.mark.parametrize(
    "memory, mib",
    [("4g", 4096), ("512m", 512), ("4096m", 4096), ("2G", 2048), ("1.5g", 1536), ("8GiB", 8192), (2048, 2048)],
)
def test_memory_forms(memory: object, mib: int) -> None:
    assert parse_bottle(BOTTLE, doc(f"resources: {{memory: {memory}}}")).resources.memory_mib == mib


@pytest.mark.parametrize(
    "upstream",
    [
        "https://git.example.com/team/web.git",
        "ssh://git@git.example.com/web.git",
        "git@git.example.com:web.git",
    ],
)
def test_git_upstream_forms(upstream: str) -> None:
    spec = parse_bottle(BOTTLE, doc(f"git: {{upstream: '{upstream}'}}"))
    assert spec.git == GitSpec(upstream, "main", None)


@pytest.mark.parametrize(
    ("upstream", "local"),
    [
        ("/srv/git/web.git", "/srv/git/web.git"),
        ("file:///srv/git/web%20app", "/srv/git/web app"),
        ("~/src/web", str(Path("~/src/web").expanduser())),
        ("../code/app", "/h/code/app"),  # relative to the manifest's folder
        ("app", "/h/bottles/app"),
        ("./app/", "/h/bottles/app"),
    ],
)
def test_local_upstreams_resolve_to_an_absolute_path(upstream: str, local: str) -> None:
    spec = parse_bottle(Path("/h/bottles/web.md"), doc(f"git: {{upstream: '{upstream}'}}"))
    assert spec.git is not None and spec.git.local == Path(local) and spec.git.upstream == upstream


def test_remote_upstreams_have_no_local_path() -> None:
    spec = parse_bottle(BOTTLE, doc("git: {upstream: 'https://h/r.git', review: true}"))
    assert spec.git is not None and spec.git.local is None and spec.git.review is True


def test_agent_parses_with_prompt_body_stripped() -> None:
    text = doc(
        "bottle: dev\nmodel: sonnet\nclaude_args: [--verbose, --max-turns, '5']\ndescription: Writes code.",
        "\n\nBe careful.\n\n",
    )
    assert parse_agent(AGENT, text) == AgentSpec(
        name="coder",
        path=AGENT,
        bottle="dev",
        model="sonnet",
        claude_args=("--verbose", "--max-turns", "5"),
        description="Writes code.",
        prompt="Be careful.",
    )


def test_agent_name_key_overrides_file_stem_and_crlf_and_bom_are_fine() -> None:
    spec = parse_agent(AGENT, "\ufeff---\r\nname: helper\r\nbottle: dev\r\n---\r\nHi\r\n")
    assert (spec.name, spec.bottle, spec.model, spec.claude_args, spec.prompt) == ("helper", "dev", None, (), "Hi")


def test_shipped_defaults_load_from_a_missing_home(tmp_path: Path) -> None:
    m = load_manifests(tmp_path / "nothing-here")
    assert m.agents_from_defaults is True and m.home == tmp_path / "nothing-here"
    assert list(m.agents) == ["implementer"] and "dev" in m.bottles
    agent, dev = m.agents["implementer"], m.bottles["dev"]
    assert agent.bottle == "dev" and "/home/agent/work" in agent.prompt and "supervise" in agent.prompt
    assert dev.backend == "docker" and dev.supervise.enabled
    assert dev.routes == (
        Route(
            "api.anthropic.com",
            (443,),
            (),
            (),
            RouteAuth("header", "ANTHROPIC_API_KEY", "x-api-key"),
            ("https",),
            DlpSpec(body=False),
        ),
    )

    assert dev.resources == Resources(cpus=2.0, memory_mib=4096, pids=1024)


def test_home_bottle_overrides_default_and_home_agents_replace_defaults(tmp_path: Path) -> None:
    write(tmp_path, "bottles/dev.md", doc("description: mine\negress: {routes: [{host: api.example.com}]}"))
    write(tmp_path, "bottles/web.md", doc("backend: docker"))
    write(tmp_path, "agents/coder.md", doc("bottle: web"))
    write(tmp_path, "agents/.#coder.md", "editor lock file, ignored")
    write(tmp_path, "agents/notes.txt", "not a manifest")
    m = load_manifests(tmp_path)
    assert m.agents_from_defaults is False and list(m.agents) == ["coder"]
    assert list(m.bottles) == ["dev", "web"]
    assert m.bottles["dev"].description == "mine" and m.bottles["dev"].path == tmp_path / "bottles/dev.md"
    with pytest.raises(TypeError):
        m.agents["x"] = m.agents["coder"]  # type: ignore[index]


def test_empty_agents_folder_uses_default_agents(tmp_path: Path) -> None:
    (tmp_path / "agents").mkdir()
    write(tmp_path, "bottles/web.md", doc(""))
    m = load_manifests(tmp_path)
    assert m.agents_from_defaults is True and list(m.agents) == ["implementer"] and set(m.bottles) == {"dev", "web"}


def test_default_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CLAUDE_BOTTLE_HOME", str(tmp_path))
    assert default_home() == tmp_path
    monkeypatch.delenv("CLAUDE_BOTTLE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_home() == tmp_path / ".claude-bottle"


def test_manifest_error_shape_and_pickle() -> None:
    err = ManifestError(Path("a.md"), "egress.routes[0]", "bad\n  thing")
    assert str(err) == "a.md: egress.routes[0]: bad thing" and err.problem == "bad thing"
    assert str(ManifestError(Path("a.md"), "", "broken")) == "a.md: broken"
    again = pickle.loads(pickle.dumps(err))
    assert (again.path, again.key, str(again)) == (err.path, err.key, str(err))


# --- errors in one bottle file: (front matter, key path, parts of the message) --------------------

BOTTLE_ERRORS = {
    # egress.workers: a count within the bundle's means, or auto
    "workers-too-many": (
        "egress:\n  workers: 9\n",
        "egress.workers",
        ["must be a whole number from 1 to 8, or auto", "write e.g. workers: 2"],
    ),
    "workers-zero": ("egress:\n  workers: 0\n", "egress.workers", ["from 1 to 8"]),
    "workers-word": ("egress:\n  workers: all\n", "egress.workers", ["or auto (the bundle's CPUs, up to 4)"]),
    "workers-bool": ("egress:\n  workers: true\n", "egress.workers", ["a whole number"]),
    # 1 invalid YAML, with the file's line number and a hint
    "yaml-syntax": ("description: ok\negress:\n  routes: [\n", "", ["invalid YAML at line", "check the indentation"]),
    "yaml-bad-indent": (
        "description: ok\nbackend: docker\n  egress: x\n",
        "",
        ["invalid YAML at line 4", "mapping values are not allowed"],
    ),
    "yaml-unquoted-wildcard": (
        "egress:\n  routes:\n    - host: *.example.com\n",
        "",
        ["invalid YAML at line 4", 'quote wildcard hosts, e.g. host: "*.example.com"'],
    ),
    "yaml-tab": ("egress:\n\troutes: []\n", "", ["invalid YAML at line 3", "spaces, not tabs"]),
    "yaml-duplicate-key": (
        "backend: docker\nbackend: smolvm\n",
        "",
        ["invalid YAML at line 3", "key 'backend' appears twice", "remove one"],
    ),
    "yaml-control-char": (
        "description: ok\nname: \x01web\n",
        "",
        ["invalid YAML at line 3", "'\\x01' is not allowed", "remove it"],
    ),
    "yaml-bad-timestamp": (
        "description: !!timestamp 2020-13-45\n",
        "",
        ["invalid YAML", "month must be in 1..12", "quote it"],
    ),
    # 3 front matter not a mapping
    "front-matter-list": ("- a\n- b\n", "", ["front matter must be YAML keys (a mapping), got list"]),
    "front-matter-str": ("just words\n", "", ["front matter must be YAML keys (a mapping), got str"]),
    # 4 unknown top-level key with did-you-mean
    "unknown-top-key": ("egres:\n  routes: []\n", "egres", ["unknown key 'egres'", "did you mean 'egress'?"]),
    "unknown-top-key-no-match": ("zzzz: 1\n", "zzzz", ["unknown key 'zzzz'", "use one of: name, description"]),
    # 5 unknown nested keys
    "unknown-route-key": (
        "egress:\n  routes:\n    - hots: api.example.com\n",
        "egress.routes[0].hots",
        ["did you mean 'host'?"],
    ),
    "unknown-auth-key": (
        "egress: {routes: [{host: a.example.com, auth: {scheme: bearer, token: x}}]}",
        "egress.routes[0].auth.token",
        ["did you mean 'token_env'?"],
    ),
    "unknown-resources-key": ("resources: {memroy: 4g}", "resources.memroy", ["did you mean 'memory'?"]),
    # 6 wrong types
    "routes-not-list": (
        "egress: {routes: api.example.com}",
        "egress.routes",
        ["expected a list, got str", "write e.g."],
    ),
    "egress-not-mapping": ("egress: [a]", "egress", ["expected a mapping, got list"]),
    "route-not-mapping": (
        "egress: {routes: [api.example.com]}",
        "egress.routes[0]",
        ["expected a mapping, got str", "- host: api.example.com"],
    ),
    "ports-not-list": (
        "egress: {routes: [{host: a.example.com, ports: 443}]}",
        "egress.routes[0].ports",
        ["expected a list, got int", "ports: [443]"],
    ),
    "ports-not-ints": (
        "egress: {routes: [{host: a.example.com, ports: [443, '80']}]}",
        "egress.routes[0].ports[1]",
        ["expected an integer, got str"],
    ),
    "ports-empty": (
        "egress: {routes: [{host: a.example.com, ports: []}]}",
        "egress.routes[0].ports",
        ["empty list", "leave ports out"],
    ),
    "cpus-string": ("resources: {cpus: '2'}", "resources.cpus", ["expected a number, got str", "cpus: 2"]),
    "cpus-bool": ("resources: {cpus: true}", "resources.cpus", ["expected a number, got bool"]),
    "pids-float": ("resources: {pids: 1.5}", "resources.pids", ["expected an integer, got float"]),
    "supervise-bool": (
        "supervise: false",
        "supervise",
        ["expected a mapping, got bool", "supervise: {enabled: false}"],
    ),
    "supervise-enabled-str": ("supervise: {enabled: 'no'}", "supervise.enabled", ["expected true or false, got str"]),
    "timeout-zero": (
        "supervise: {timeout_seconds: 0}",
        "supervise.timeout_seconds",
        ["0 is out of range", "at least 1"],
    ),
    "description-list": ("description: [a]", "description", ["expected a string, got list"]),
    "host-number": (
        "egress: {routes: [{host: 42}]}",
        "egress.routes[0].host",
        ["expected a string, got int", "quote the value"],
    ),
    # 7, 8 host with scheme, path or port
    "host-scheme": (
        "egress: {routes: [{host: 'https://api.example.com/v1'}]}",
        "egress.routes[0].host",
        ["has a scheme", "write the host name only", "api.example.com"],
    ),
    "host-path": (
        "egress: {routes: [{host: api.example.com/v1}]}",
        "egress.routes[0].host",
        ["has a path", "write the host name only", "paths: ['/v1']"],
    ),
    "host-port": (
        "egress: {routes: [{host: 'api.example.com:8443'}]}",
        "egress.routes[0].host",
        ["has a port", "ports: [8443]"],
    ),
    "host-missing": (
        "egress: {routes: [{ports: [443]}]}",
        "egress.routes[0].host",
        ["missing", "host: api.example.com"],
    ),
    "host-invalid": (
        "egress: {routes: [{host: 'api example.com'}]}",
        "egress.routes[0].host",
        ["not a valid host name"],
    ),
    # 9 bad wildcards
    "wildcard-middle": (
        "egress: {routes: [{host: 'foo.*.com'}]}",
        "egress.routes[0].host",
        ["bad wildcard", "whole first label", "*.example.com"],
    ),
    "wildcard-tld": (
        "egress: {routes: [{host: '*.com'}]}",
        "egress.routes[0].host",
        ["too broad", "at least two labels"],
    ),
    "wildcard-partial": ("egress: {routes: [{host: '*api.example.com'}]}", "egress.routes[0].host", ["bad wildcard"]),
    "dlp-bad-rule": ("dlp: {disabled_rules: ['not a rule']}", "dlp.disabled_rules[0]", ["is not a gitleaks rule id"]),
    "dlp-body-not-bool": ("dlp: {body: 'no'}", "dlp.body", ["expected true or false"]),
    "dlp-cap-zero": ("dlp: {max_body_bytes: 0}", "dlp.max_body_bytes", ["out of range"]),
    "dlp-old-key": (
        "dlp: {exempt_hosts: [a.example.com]}",
        "dlp.exempt_hosts",
        ["unknown key", "use one of: body, disabled_rules, max_body_bytes"],
    ),
    "route-dlp-bad": (
        "egress: {routes: [{host: a.example.com, dlp: {body: 1}}]}",
        "egress.routes[0].dlp.body",
        ["expected true or false"],
    ),
    # 10 port out of range
    "port-zero": (
        "egress: {routes: [{host: a.example.com, ports: [0]}]}",
        "egress.routes[0].ports[0]",
        ["0 is out of range", "between 1 and 65535"],
    ),
    "port-high": (
        "egress: {routes: [{host: a.example.com, ports: [443, 70000]}]}",
        "egress.routes[0].ports[1]",
        ["70000 is out of range"],
    ),
    # 11 unknown method
    "method-unknown": (
        "egress: {routes: [{host: a.example.com, methods: [GET, PSOT]}]}",
        "egress.routes[0].methods[1]",
        ["unknown HTTP method 'PSOT'", "did you mean 'POST'?"],
    ),
    "methods-empty": (
        "egress: {routes: [{host: a.example.com, methods: []}]}",
        "egress.routes[0].methods",
        ["leave methods out to allow any method"],
    ),
    # 12 path without leading slash
    "path-relative": (
        "egress: {routes: [{host: a.example.com, paths: ['api/v1']}]}",
        "egress.routes[0].paths[0]",
        ["must start with '/'", "'/api/v1'"],
    ),
    # 13 unknown auth scheme
    "auth-scheme-unknown": (
        "egress: {routes: [{host: a.example.com, auth: {scheme: baerer, token_env: T}}]}",
        "egress.routes[0].auth.scheme",
        ["unknown auth scheme 'baerer'", "did you mean 'bearer'?"],
    ),
    "auth-scheme-missing": (
        "egress: {routes: [{host: a.example.com, auth: {token_env: T}}]}",
        "egress.routes[0].auth.scheme",
        ["missing", "bearer, basic, header"],
    ),
    # 14 token_env bad or missing
    "token-env-bad": (
        "egress: {routes: [{host: a.example.com, auth: {scheme: bearer, token_env: 'my-token'}}]}",
        "egress.routes[0].auth.token_env",
        ["'my-token' is not an environment variable name"],
    ),
    "token-env-missing": (
        "egress: {routes: [{host: a.example.com, auth: {scheme: basic}}]}",
        "egress.routes[0].auth.token_env",
        ["missing", "token_env: API_TOKEN"],
    ),
    # 15 header scheme without header, header with bearer
    "header-missing": (
        "egress: {routes: [{host: a.example.com, auth: {scheme: header, token_env: T}}]}",
        "egress.routes[0].auth.header",
        ["missing", "header: x-api-key"],
    ),
    "header-with-bearer": (
        "egress: {routes: [{host: a.example.com, auth: {scheme: bearer, token_env: T, header: x-key}}]}",
        "egress.routes[0].auth.header",
        ["only used with scheme: header", "remove it"],
    ),
    "scheme-unknown": (
        "egress: {routes: [{host: a.example.com, schemes: [https, ftp]}]}",
        "egress.routes[0].schemes[1]",
        ["unknown scheme 'ftp'"],
    ),
    "schemes-empty": (
        "egress: {routes: [{host: a.example.com, schemes: []}]}",
        "egress.routes[0].schemes",
        ["empty list", "leave schemes out"],
    ),
    "header-bad-name": (
        "egress: {routes: [{host: a.example.com, auth: {scheme: header, token_env: T, header: 'x key'}}]}",
        "egress.routes[0].auth.header",
        ["not an HTTP header name"],
    ),
    # 16 unknown backend
    "backend-unknown": ("backend: dokcer", "backend", ["unknown backend 'dokcer'", "did you mean 'docker'?"]),
    # 20 bad name characters
    "name-bad": (
        "name: Web_App",
        "name",
        ["'Web_App' is not a valid bottle name", "lowercase letters, digits and '-'"],
    ),
    "name-too-long": ("name: " + "a" * 32, "name", ["is not a valid bottle name", "1-31"]),
    # 21 bad memory format
    "memory-unit": ("resources: {memory: 4k}", "resources.memory", ["bad memory size '4k'", "4g or 512m"]),
    "memory-float": ("resources: {memory: 4.5}", "resources.memory", ["expected a size like 4g or 512m", "got float"]),
    "memory-zero": ("resources: {memory: 0m}", "resources.memory", ["less than 1 MiB"]),
    # 22 negative / zero cpus or pids
    "cpus-zero": ("resources: {cpus: 0}", "resources.cpus", ["0 is out of range", "above 0"]),
    "cpus-negative": ("resources: {cpus: -1.5}", "resources.cpus", ["-1.5 is out of range"]),
    "pids-negative": ("resources: {pids: -4}", "resources.pids", ["-4 is out of range", "at least 1"]),
    # 23 env values that are not scalars, bad env names, secrets in env
    "env-mapping-value": ("env: {CONFIG: {a: 1}}", "env.CONFIG", ["expected a string, number or boolean, got mapping"]),
    "env-list-value": ("env: {PATHS: [a, b]}", "env.PATHS", ["got list", "plain text"]),
    "env-null-value": ("env: {EMPTY: null}", "env.EMPTY", ["has no value", "''"]),
    "env-bad-name": ("env: {'1ABC': x}", "env.1ABC", ["not an environment variable name"]),
    "env-not-mapping": ("env: [A=1]", "env", ["expected a mapping, got list", "LOG_LEVEL: debug"]),
    "env-holds-secret": (
        "env: {T: x}\negress: {routes: [{host: a.example.com, auth: {scheme: bearer, token_env: T}}]}",
        "env.T",
        ["secret named by egress.routes[0].auth.token_env"],
    ),
    # 25 duplicate route
    "route-duplicate": (
        "egress:\n  routes:\n    - {host: a.example.com, ports: [443, 80]}\n    - {host: b.example.com}\n    - {host: A.example.com}\n",
        "egress.routes[2]",
        ["same host, ports, methods and paths as routes[0]", "remove one or merge"],
    ),
    # git
    "git-http": (
        "git: {upstream: 'http://git.example.com/r.git'}",
        "git.upstream",
        ["'http://' upstreams are not supported", "https://"],
    ),
    "git-credentials-in-url": (
        "git: {upstream: 'https://me:secret@git.example.com/r.git'}",
        "git.upstream",
        ["credentials are written in the URL", "credentials_env"],
    ),
    "git-control-character": ('git: {upstream: "a\\tb"}', "git.upstream", ["is not a git upstream"]),
    "git-review-not-bool": ("git: {upstream: /srv/r.git, review: 'yes'}", "git.review", ["true or false"]),
    "git-missing-upstream": ("git: {branch: main}", "git.upstream", ["missing"]),
    "git-bad-branch": ("git: {upstream: /srv/r.git, branch: 'a..b'}", "git.branch", ["not a valid branch name"]),
    "git-bad-credentials-env": (
        "git: {upstream: /srv/r.git, credentials_env: 'git token'}",
        "git.credentials_env",
        ["not an environment variable name"],
    ),
    "dlp-rules-not-strings": ("dlp: {disabled_rules: [1]}", "dlp.disabled_rules[0]", ["expected a string, got int"]),
}


@pytest.mark.parametrize("front, key, parts", list(BOTTLE_ERRORS.values()), ids=list(BOTTLE_ERRORS))
def test_bottle_error(front: str, key: str, parts: list[str]) -> None:
    assert_message(bottle_error(front), BOTTLE, key, *parts)


# --- errors in one agent file -------------------------------------------------------------------

AGENT_ERRORS = {
    # 2 no / unterminated front matter
    "no-front-matter": ("Just a prompt.\n", "", ["no front matter", "start with a '---' line"]),
    "empty-file": ("", "", ["no front matter"]),
    "unterminated": ("---\nbottle: dev\nThe prompt.\n", "", ["never closed", "add a '---' line"]),
    # 17 missing bottle
    "bottle-missing": (doc("model: sonnet"), "bottle", ["missing", "bottle: dev"]),
    "bottle-bad-name": (doc("bottle: Dev Box"), "bottle", ["not a valid bottle name"]),
    # 24 claude_args not a list of strings
    "claude-args-str": (
        doc("bottle: dev\nclaude_args: --verbose"),
        "claude_args",
        ["expected a list, got str", "claude_args: [--verbose]"],
    ),
    "claude-args-int": (
        doc("bottle: dev\nclaude_args: [--max-turns, 5]"),
        "claude_args[1]",
        ["expected a string, got int", "quote the value", "'5'"],
    ),
    "unknown-agent-key": (doc("bottle: dev\nmodle: opus"), "modle", ["did you mean 'model'?"]),
    "model-empty": (doc("bottle: dev\nmodel: ''"), "model", ["empty string"]),
    "agent-name-bad": (doc("name: My Agent\nbottle: dev"), "name", ["not a valid agent name"]),
}


@pytest.mark.parametrize("text, key, parts", list(AGENT_ERRORS.values()), ids=list(AGENT_ERRORS))
def test_agent_error(text: str, key: str, parts: list[str]) -> None:
    assert_message(agent_error(text), AGENT, key, *parts)


def test_file_stem_that_is_not_a_name_needs_a_name_key() -> None:
    path = Path("agents/My Agent.md")
    with pytest.raises(ManifestError) as info:
        parse_agent(path, doc("bottle: dev"))
    assert_message(
        info.value, path, "name", "file name 'My Agent' is not a valid agent name", "rename the file or set name:"
    )
    assert parse_agent(path, doc("name: my-agent\nbottle: dev")).name == "my-agent"


# --- errors across files ------------------------------------------------------------------------


def load_error(home: Path) -> ManifestError:
    with pytest.raises(ManifestError) as info:
        load_manifests(home)
    return info.value


def test_agent_bottle_not_found_suggests_a_known_bottle(tmp_path: Path) -> None:
    path = write(tmp_path, "agents/coder.md", doc("bottle: dve"))
    assert_message(
        load_error(tmp_path), path, "bottle", "no bottle named 'dve'", "did you mean 'dev'?", "bottles/dve.md"
    )


def test_agent_bottle_not_found_lists_known_bottles(tmp_path: Path) -> None:
    path = write(tmp_path, "agents/coder.md", doc("bottle: zzz"))
    assert_message(load_error(tmp_path), path, "bottle", "no bottle named 'zzz'", "known bottles: dev")


def test_duplicate_bottle_names_across_files(tmp_path: Path) -> None:
    first = write(tmp_path, "bottles/a.md", doc("name: web"))
    second = write(tmp_path, "bottles/b.md", doc("name: web"))
    assert_message(
        load_error(tmp_path), second, "name", "bottle 'web' is already defined in", str(first), "another name"
    )


def test_duplicate_agent_names_across_files(tmp_path: Path) -> None:
    write(tmp_path, "agents/a.md", doc("name: coder\nbottle: dev"))
    second = write(tmp_path, "agents/coder.md", doc("bottle: dev"))
    assert_message(load_error(tmp_path), second, "name", "agent 'coder' is already defined in")


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "bottles" / "web.md"
    path.parent.mkdir()
    path.write_bytes(b"---\ndescription: caf\xe9\n---\n")
    assert_message(load_error(tmp_path), path, "", "not UTF-8", "0xe9", "line 2", "save the file as UTF-8")


def test_file_that_cannot_be_read(tmp_path: Path) -> None:
    path = tmp_path / "agents" / "broken.md"
    path.parent.mkdir()
    path.symlink_to(tmp_path / "missing-target.md")
    assert_message(load_error(tmp_path), path, "", "cannot read the file")


def test_agents_path_that_is_a_file(tmp_path: Path) -> None:
    path = write(tmp_path, "agents", "oops")
    assert_message(load_error(tmp_path), path, "", "is not a folder")


def test_first_error_in_sorted_file_order(tmp_path: Path) -> None:
    write(tmp_path, "bottles/b.md", doc("backend: nope"))
    first = write(tmp_path, "bottles/a.md", doc("egres: {}"))
    assert load_error(tmp_path).path == first


def test_errors_inside_a_home_file_name_that_file(tmp_path: Path) -> None:
    path = write(tmp_path, "bottles/web.md", doc("egress:\n  routes:\n    - host: 'https://x.example.com'\n"))
    assert_message(load_error(tmp_path), path, "egress.routes[0].host", "write the host name only")


# --- odd input never raises anything but ManifestError --------------------------------------------

ODD_FRONT_MATTER = [
    "- a\n- b",
    "42",
    "null",
    "~",
    "true",
    "'just a string'",
    "!!binary aGVsbG8=",
    "!!python/object:os.system {}",
    "bottle:",
    "bottle: ~\nclaude_args: ~",
    "egress: ~",
    "egress: {routes: ~}",
    "egress: {routes: [~]}",
    "egress: {routes: [{host: ~}]}",
    "egress: {routes: [{host: a.example.com, auth: ~, ports: ~}]}",
    "egress: {routes: [[]]}",
    "env: {A: ~}",
    "env: {~: 1}",
    "? [a, b]\n: c",
    "{a: 1}: x",
    "1: 2",
    "yes: no",
    "bottle: 2024-01-01",
    "bottle: [dev]",
    "resources: {memory: []}",
    "git: {upstream: 'https://[bad'}",
    "git: {upstream: 'ssh://'}",
    "git: ''",
    "dlp: {disabled_rules: [[]]}",
    "a: &x [*x]",
    "base: &b {bottle: dev}\n<<: *b",
    "egress:\n  routes:\n" + "    - {host: a.example.com}\n" * 3,
    "[" * 2000 + "]" * 2000,
    "description: !!timestamp 2020-13-45",
    "bottle: dev\nmodel: [a]",
    "\x00",
]


# The few odd front matters a bottle file may have: each is a valid bottle with no routes, or
# the one route it names with the manifest's defaults. Every other case above must be refused.
BOTTLES_ACCEPTED = {
    "null": 0,
    "~": 0,
    "egress: ~": 0,
    "egress: {routes: ~}": 0,
    "egress: {routes: [{host: a.example.com, auth: ~, ports: ~}]}": 1,
}


@pytest.mark.parametrize("front", ODD_FRONT_MATTER)
def test_odd_yaml_only_raises_manifest_error(front: str) -> None:
    for parse, path in ((parse_bottle, BOTTLE), (parse_agent, AGENT)):
        accepted = parse is parse_bottle and front in BOTTLES_ACCEPTED
        try:
            spec = parse(path, doc(front, "body"))
        except ManifestError as err:
            assert not accepted, f"{front!r} should be a valid bottle: {err}"
            assert "\n" not in str(err) and str(err).startswith(str(path))
            continue
        assert accepted, f"{parse.__name__} accepted {front!r}"
        assert len(spec.routes) == BOTTLES_ACCEPTED[front]
        assert all(r.host == "a.example.com" and r.auth is None and r.ports for r in spec.routes)


def test_route_schemes_default_by_auth_and_can_be_listed() -> None:
    spec = parse_bottle(
        BOTTLE,
        doc(
            "egress:\n  routes:\n"
            "    - {host: a.example.com}\n"
            "    - {host: b.example.com, auth: {scheme: bearer, token_env: T}}\n"
            "    - {host: c.example.com, schemes: [HTTP], auth: {scheme: bearer, token_env: T}}\n"
            "    - {host: d.example.com, schemes: [https, https]}\n",
            "",
        ),
    )
    assert [r.schemes for r in spec.routes] == [("http", "https"), ("https",), ("http",), ("https",)]
