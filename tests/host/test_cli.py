"""The CLI on bad input: each mistake is one line on stderr naming file and key, exit 1, no traceback.

Runs `bottle-tui --home H start AGENT --dry-run` as a real subprocess (dry runs touch no docker).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

GOOD_AGENT = "---\nbottle: box\n---\nprompt\n"
GOOD_BOTTLE = "---\negress:\n  routes:\n    - host: api.example.com\n---\n"

# (what is wrong, file -> text, words the message must contain)
MISTAKES = [
    ("yaml syntax", {"bottles/box.md": "---\negress: [unclosed\n---\n"}, ["bottles/box.md", "line"]),
    ("no front matter", {"bottles/box.md": "just text\n"}, ["bottles/box.md", "front matter"]),
    ("front matter is a list", {"bottles/box.md": "---\n- a\n- b\n---\n"}, ["bottles/box.md", "mapping"]),
    ("unknown top key", {"bottles/box.md": "---\negres: {}\n---\n"}, ["egres", "did you mean 'egress'"]),
    (
        "unknown route key",
        {"bottles/box.md": "---\negress:\n  routes:\n    - hots: a.example.com\n---\n"},
        ["egress.routes[0]", "did you mean 'host'"],
    ),
    (
        "routes not a list",
        {"bottles/box.md": "---\negress:\n  routes: api.example.com\n---\n"},
        ["egress.routes", "list"],
    ),
    (
        "host with scheme",
        {"bottles/box.md": "---\negress:\n  routes:\n    - host: https://api.example.com\n---\n"},
        ["egress.routes[0].host", "host name only"],
    ),
    (
        "host with path",
        {"bottles/box.md": "---\negress:\n  routes:\n    - host: api.example.com/v1\n---\n"},
        ["egress.routes[0].host"],
    ),
    (
        "bad wildcard",
        {"bottles/box.md": "---\negress:\n  routes:\n    - host: 'foo.*.com'\n---\n"},
        ["egress.routes[0].host", "*"],
    ),
    (
        "port out of range",
        {"bottles/box.md": "---\negress:\n  routes:\n    - host: a.example.com\n      ports: [70000]\n---\n"},
        ["ports[0]", "65535"],
    ),
    (
        "unknown method",
        {"bottles/box.md": "---\negress:\n  routes:\n    - host: a.example.com\n      methods: [FETCH]\n---\n"},
        ["methods[0]", "FETCH"],
    ),
    (
        "path without slash",
        {"bottles/box.md": "---\negress:\n  routes:\n    - host: a.example.com\n      paths: [v1]\n---\n"},
        ["paths[0]", "/"],
    ),
    (
        "unknown auth scheme",
        {
            "bottles/box.md": "---\negress:\n  routes:\n    - host: a.example.com\n      auth: {scheme: oauth, token_env: T}\n---\n"
        },
        ["auth.scheme", "oauth"],
    ),
    (
        "bad token_env",
        {
            "bottles/box.md": "---\negress:\n  routes:\n    - host: a.example.com\n      auth: {scheme: bearer, token_env: 'my-token'}\n---\n"
        },
        ["auth.token_env"],
    ),
    (
        "header scheme without header",
        {
            "bottles/box.md": "---\negress:\n  routes:\n    - host: a.example.com\n      auth: {scheme: header, token_env: T}\n---\n"
        },
        ["auth", "header"],
    ),
    ("unknown backend", {"bottles/box.md": "---\nbackend: dockr\n---\n"}, ["backend", "did you mean 'docker'"]),
    ("agent without bottle", {"agents/coder.md": "---\nmodel: sonnet\n---\n"}, ["agents/coder.md", "bottle"]),
    ("bottle not found", {"agents/coder.md": "---\nbottle: bx\n---\n"}, ["agents/coder.md", "bx"]),
    ("duplicate names", {"bottles/other.md": "---\nname: box\n---\n"}, ["name", "already defined in"]),
    ("bad memory", {"bottles/box.md": "---\nresources: {memory: lots}\n---\n"}, ["resources.memory", "lots"]),
    ("zero cpus", {"bottles/box.md": "---\nresources: {cpus: 0}\n---\n"}, ["resources.cpus"]),
    ("env value a mapping", {"bottles/box.md": "---\nenv: {A: {b: c}}\n---\n"}, ["env.A"]),
    (
        "claude_args not a list",
        {"agents/coder.md": "---\nbottle: box\nclaude_args: --verbose\n---\n"},
        ["claude_args", "list"],
    ),
    ("not utf-8", {"bottles/box.md": b"---\ndescription: \xff\xfe\n---\n"}, ["bottles/box.md", "UTF-8"]),
]


def write(home: Path, files: dict[str, str | bytes]) -> None:
    base = {"agents/coder.md": GOOD_AGENT, "bottles/box.md": GOOD_BOTTLE}
    base.update(files)
    for rel, text in base.items():
        path = home / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text if isinstance(text, bytes) else textwrap.dedent(text).encode())


@pytest.mark.parametrize("what,files,words", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_bad_manifest_is_one_clear_line(tmp_path: Path, what: str, files: dict, words: list[str]) -> None:
    write(tmp_path, files)
    r = subprocess.run(
        [sys.executable, "-m", "bottle_tui", "--home", str(tmp_path), "start", "coder", "--dry-run"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    assert r.returncode == 1, (what, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("bottle-tui: error: ")
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert not (tmp_path / "state").exists()


def test_good_manifests_dry_run_prints_the_plan(tmp_path: Path) -> None:
    write(tmp_path, {})
    r = subprocess.run(
        [sys.executable, "-m", "bottle_tui", "--home", str(tmp_path), "start", "coder", "--dry-run"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert "api.example.com" in r.stdout and "dry run" in r.stderr
    assert not (tmp_path / "state").exists()


def test_unknown_command_is_a_usage_error(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "bottle_tui", "frobnicate"], capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    assert r.returncode == 2 and "invalid choice" in r.stderr and "Traceback" not in r.stderr


def run_cli(home: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bottle_tui", "--home", str(home), *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
        env={**os.environ, **env},
    )


@pytest.mark.parametrize(
    "args",
    [
        ("ls",),
        ("start", "coder", "--yes"),
        ("stop", "coder-000000"),
        ("resume", "coder-000000"),
        ("cleanup", "--dry-run"),
    ],
)
def test_no_engine_is_one_line_naming_the_fix(tmp_path: Path, args: tuple[str, ...]) -> None:
    if shutil.which("docker") is None:
        if os.environ.get("BOTTLE_REQUIRE_DOCKER"):
            pytest.fail("BOTTLE_REQUIRE_DOCKER is set but there is no docker CLI: run `make engine`")
        pytest.skip("needs the docker CLI (not an engine): `make engine` installs it")
    # The real docker CLI, pointed at a socket where no engine listens.
    write(tmp_path, {})
    r = run_cli(tmp_path, *args, env={"DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"})
    assert r.returncode == 1, r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith("bottle-tui: error: no Docker engine answers") and "make engine" in lines[-1]
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "state").exists()


def test_no_docker_cli_is_one_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    r = run_cli(tmp_path, "ls", env={"PATH": str(empty)})
    assert r.returncode == 1
    assert (
        r.stderr.strip()
        == "bottle-tui: error: the docker CLI is not installed: run `make engine` (installs and starts dockerd and compose as root) or start your Docker engine"
    )


@pytest.mark.parametrize(
    "args,env,message",
    [
        (("--tmux", "ls"), {}, "bottle-tui: error: --tmux opens the console: run `bottle-tui --tmux` without `ls`"),
        (
            ("--tmux",),
            {"PATH": "{empty}"},
            "bottle-tui: error: --tmux: tmux is not installed: install it (apt-get install tmux) or run bottle-tui without --tmux",
        ),
        (("--tmux",), {}, "bottle-tui: error: --tmux needs a terminal: run it from an interactive shell"),
    ],
    ids=["with a subcommand", "no tmux", "no terminal"],
)
def test_tmux_mistakes_are_one_line(tmp_path: Path, args: tuple[str, ...], env: dict[str, str], message: str) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    env = {k: v.format(empty=empty) for k, v in env.items()}
    env.setdefault("TMUX", "")  # as outside tmux, whatever runs the tests
    r = run_cli(tmp_path, *args, env=env)
    assert r.returncode == 1 and r.stderr.strip() == message, r.stderr


def test_tmux_session_is_one_per_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bottle_tui.cli import tmux_session_name

    monkeypatch.setenv("CLAUDE_BOTTLE_HOME", str(tmp_path / "default"))
    assert tmux_session_name(tmp_path / "default") == "bottle-tui"
    one, two = tmux_session_name(tmp_path / "a"), tmux_session_name(tmp_path / "b")
    assert one != two and one.startswith("bottle-tui-") and one == tmux_session_name(tmp_path / "x" / ".." / "a")
