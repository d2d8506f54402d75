"""Fixtures for tests against the real Docker engine: images, a test home, the fake internet, bottles.

Tests here skip only when no engine answers and BOTTLE_REQUIRE_DOCKER is unset; with it set (CI)
they fail instead. Everything they create is removed at the end of the session. With pytest-xdist
(`make test`: INTEGRATION_WORKERS, `--dist loadfile`) each worker has a session of its own: its own
test home and fake internet.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections import defaultdict
from pathlib import Path

import libtmux
import pytest

from bottle_tui.backends.docker import engine, images
from tests.support.bottles import (
    GIT_CREDENTIAL,
    SEED_UPSTREAM,
    connect_fake_internet,
    engine_answers,
    make_fake_git_cert,
    make_fake_pki,
    remove_fake_internet,
    run_fake_internet,
    sh,
    start_bottle,
    start_fake_git_host,
    stop_bottle,
    write_home,
)

# The modules that take longest, longest first: workers take modules in collection order, so these
# start first and the run does not end waiting on one of them; the other modules keep their order
# after them. Measured (the summary below; 2 workers, 2 cores, a shared machine): 181, 105, 83, 76,
# 74, 69, 66, 65 and 61 s after test_swarm (whose lab bring-up alone took 147 s); the rest 30 s or
# less.
SLOWEST_FIRST = (
    "test_swarm.py",
    "test_git_gate.py",
    "test_supervise_concurrency.py",
    "test_supervise.py",
    "test_escape.py",
    "test_dlp_parity.py",
    "test_smolvm_launch.py",
    "test_supervise_abuse.py",
    "test_containment.py",
    "test_lifecycle.py",
)
HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    ours = [item for item in items if item.path.parent == HERE]
    if len(ours) == len(items):  # only when this run is the integration suite alone
        items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


_module_seconds: defaultdict[str, float] = defaultdict(float)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _module_seconds[report.nodeid.split("::")[0]] += report.duration


def pytest_terminal_summary(terminalreporter) -> None:
    """Each module's time (setup, calls and teardown of its tests, in whichever worker ran it): the
    figures SLOWEST_FIRST is ordered by."""
    if not _module_seconds:
        return
    terminalreporter.write_sep("=", "integration modules by time")
    for module, seconds in sorted(_module_seconds.items(), key=lambda kv: -kv[1])[:15]:
        terminalreporter.write_line(f"{seconds:8.1f} s  {module}")


@pytest.fixture(scope="session")
def docker_engine() -> None:
    if not engine_answers():
        if os.environ.get("BOTTLE_REQUIRE_DOCKER"):
            pytest.fail("BOTTLE_REQUIRE_DOCKER is set but no Docker engine answers `docker info`: run `make engine`")
        pytest.skip("no Docker engine answers `docker info` (run `make engine`; CI sets BOTTLE_REQUIRE_DOCKER)")


@pytest.fixture(scope="session")
def built_images(docker_engine: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    log = tmp_path_factory.mktemp("images") / "images.log"
    return asyncio.run(images.ensure_images(lambda m: print(m, file=sys.stderr), log))


@pytest.fixture(scope="session")
def home(tmp_path_factory: pytest.TempPathFactory, built_images: dict[str, str]) -> Path:
    return write_home(tmp_path_factory.mktemp("bottle-home"))


@pytest.fixture
def fresh_home(tmp_path: Path, built_images: dict[str, str]) -> Path:
    return write_home(tmp_path / "home")


@pytest.fixture(scope="session")
def fake_pki(tmp_path_factory: pytest.TempPathFactory):
    """A private CA and a certificate for the fake internet's names. Egress trusts the CA through
    CLAUDE_BOTTLE_UPSTREAM_CA, as an operator would for internal services."""
    pki = tmp_path_factory.mktemp("fake-pki")
    os.chmod(pki, 0o755)
    make_fake_pki(pki)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CLAUDE_BOTTLE_UPSTREAM_CA", str(pki / "ca.pem"))
        yield pki


@pytest.fixture(scope="session")
def fake_internet(built_images: dict[str, str], fake_pki: Path):
    """A container of our own that plays the internet: every name egress may reach resolves to it."""
    name = run_fake_internet(fake_pki, built_images["sidecars"])
    yield name
    remove_fake_internet(name)


@pytest.fixture(scope="module")
def bottle(home: Path, fake_internet: str, fake_pki: Path):
    b = start_bottle(home)
    b.fake_ip = connect_fake_internet(b, fake_internet)
    yield b
    stop_bottle(b, fake_internet)


@pytest.fixture(scope="module")
def upstream(fake_internet: str, fake_pki: Path) -> str:
    """The fake git host in the fake internet, serving UPSTREAM_URL (seeded afresh per module)
    with basic auth for GIT_CREDENTIAL."""
    make_fake_git_cert(fake_pki)
    sh("docker", "exec", fake_internet, "sh", "-c", SEED_UPSTREAM)
    start_fake_git_host(fake_internet, GIT_CREDENTIAL)
    return fake_internet


@pytest.fixture(scope="session")
def swarm_lab(built_images: dict[str, str]):
    """The swarm lab (make swarm-lab): brought up when it is not (about 2 minutes on a fresh
    machine, most of it loading the images into three engines), and taken down again at the end
    of the session when this session brought it up."""
    from tests.support import swarm

    if os.geteuid() != 0:
        message = "the swarm lab needs root (network namespaces and three dockerds): run the tests as root"
        if os.environ.get("BOTTLE_REQUIRE_DOCKER"):
            pytest.fail(message)
        pytest.skip(message)
    was_up = swarm.lab_is_up()
    seconds = swarm.lab_up()
    print(f"swarm lab: up in {seconds:.1f} s ({'was up' if was_up else 'brought up'})", file=sys.stderr)
    yield
    if not was_up:
        swarm.lab_down()


@pytest.fixture(scope="session", autouse=True)
def _sweep(tmp_path_factory: pytest.TempPathFactory):
    """Whatever a failing test left behind under the test homes goes at the end of the session."""
    yield
    if not engine_answers():
        return
    base = str(tmp_path_factory.getbasetemp())
    try:
        leftovers = asyncio.run(engine.discover())
    except Exception:
        return
    for info in leftovers:
        if info.home.startswith(base):
            sh("docker", "compose", "-p", info.project, "down", "--volumes", "--timeout", "1", check=False)
    # Work volumes outlive `compose down` (they are external to the project): those of test homes go too.
    volumes = sh(
        "docker", "volume", "ls", "--filter", "label=dev.bottle-tui.managed=true",
        "--format", '{{.Name}}\t{{.Label "dev.bottle-tui.home"}}', check=False,
    )  # fmt: skip
    for line in volumes.stdout.splitlines():
        name, _, label_home = line.partition("\t")
        if label_home.startswith(base):
            sh("docker", "volume", "rm", "-f", name, check=False)
    # So do snapshot images (`bottle-tui snapshot` commits the agent to one) of test homes.
    images = sh(
        "docker", "image", "ls", "--filter", "label=dev.bottle-tui.snapshot", "--format", "{{.Repository}}:{{.Tag}}",
        check=False,
    )  # fmt: skip
    for ref in images.stdout.split():
        label_home = sh(
            "docker", "image", "inspect", "--format", '{{index .Config.Labels "dev.bottle-tui.home"}}', ref, check=False
        ).stdout.strip()
        if label_home.startswith(base):
            sh("docker", "image", "rm", "-f", ref, check=False)


@pytest.fixture
def tmux_server():
    """A tmux server of the test's own (its own socket), killed at the end with its socket file."""
    server = libtmux.Server(socket_name=f"bottle-tui-test-{uuid.uuid4().hex[:8]}")
    yield server
    if server.is_alive():
        server.kill()
    # tmux leaves its socket file behind after kill-server.
    Path(os.environ.get("TMUX_TMPDIR", "/tmp"), f"tmux-{os.getuid()}", str(server.socket_name)).unlink(missing_ok=True)
