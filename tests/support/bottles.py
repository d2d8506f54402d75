"""Helpers for tests against the real engine: the CLI as a subprocess, a test home, bottles."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from bottle_tui.backends.docker import engine

TEST_LABEL = "dev.bottle-tui.test=true"
FAKE_DIR = Path(__file__).parents[1] / "integration" / "fake_internet"
SECRET = "sk-test-" + uuid.uuid4().hex  # the real credential egress injects; the agent must never see it
ALLOWED = "allowed.fake.test"
AUTHED = "auth.fake.test"
BLOCKED = "blocked.fake.test"
PYPI = "pypi.fake.test"  # package indexes and an LLM API of the fake internet (fake_internet/services.py)
NPM = "registry.fake.test"
ANTHROPIC = "anthropic.fake.test"
LIMITED = "limited.fake.test"  # a route limited by method and path
MODELS = "models.fake.test"  # the fake Messages API (fake_messages_api.py) behind a metered route
MODELS_PORT = 18480
FAKE_NAMES = (ALLOWED, AUTHED, BLOCKED, LIMITED, PYPI, NPM, ANTHROPIC)


def sh(*argv: str, check: bool = True, timeout: float = 120, **kw) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, **kw)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv[:6])} exited {result.returncode}:\n{result.stderr[-2000:]}")
    return result


def engine_answers() -> bool:
    try:
        return sh("docker", "info", check=False, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


MANIFESTS = {
    "agents/tester.md": """\
        ---
        bottle: sandbox
        description: the integration tests' agent
        ---
        You are a test agent.
        """,
    "bottles/sandbox.md": f"""\
        ---
        description: routes only to the tests' fake internet
        egress:
          routes:
            - host: {ALLOWED}
            - host: {AUTHED}
              ports: [443]
              auth: {{scheme: header, header: X-Api-Key, token_env: BOTTLE_TEST_TOKEN}}
            - host: {LIMITED}
              ports: [80, 443]
              methods: [GET]
              paths: ["/v1/*"]
            - host: {PYPI}
              ports: [443]
              methods: [GET, HEAD]
            - host: {NPM}
              ports: [443]
              methods: [GET, HEAD]
            - host: {ANTHROPIC}
              ports: [443]
              methods: [POST, GET]
              paths: ["/v1/*"]
              auth: {{scheme: header, header: x-api-key, token_env: BOTTLE_TEST_TOKEN}}
              dlp: {{body: false}}
        resources: {{cpus: 1, memory: 1g, pids: 256}}
        ---
        The sandbox bottle of the integration tests.
        """,
    "agents/meter.md": """\
        ---
        bottle: metered
        description: the metering agent, on one metered route with a budget
        ---
        You are a test agent.
        """,
    "bottles/metered.md": f"""\
        ---
        description: one metered route, to the fake Messages API, and a budget
        egress:
          routes:
            - host: {MODELS}
              ports: [{MODELS_PORT}]
              schemes: [http]
              methods: [POST, GET]
              usage: anthropic
              dlp: {{body: false}}
        budget: {{usd: 5}}
        supervise: {{enabled: false}}
        resources: {{cpus: 1, memory: 1g, pids: 256}}
        ---
        The metering tests' bottle: egress's budget proposal needs no supervise.
        """,
}


def write_home(home: Path) -> Path:
    for rel, text in MANIFESTS.items():
        path = home / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return home


def make_fake_pki(folder: Path) -> None:
    """openssl: a CA, and a server certificate for every fake-internet name signed by it."""
    ca_key, ca, key, csr, cert = (
        str(folder / n) for n in ("ca-key.pem", "ca.pem", "server-key.pem", "server.csr", "server.pem")
    )
    sh(
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-sha256",
        "-days",
        "2",
        "-keyout",
        ca_key,
        "-out",
        ca,
        "-subj",
        "/CN=bottle-tui fake internet CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    )
    sh("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", f"/CN={ALLOWED}")
    ext = folder / "san.ext"
    ext.write_text(
        "subjectAltName="
        + ",".join(f"DNS:{h}" for h in FAKE_NAMES)
        + "\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
    )
    sh(
        "openssl",
        "x509",
        "-req",
        "-in",
        csr,
        "-CA",
        ca,
        "-CAkey",
        ca_key,
        "-CAcreateserial",
        "-days",
        "2",
        "-sha256",
        "-extfile",
        str(ext),
        "-out",
        cert,
    )
    for name in ("server-key.pem", "server.pem", "ca.pem"):
        (folder / name).chmod(0o644)


def cli(
    home: Path, *args: str, check: bool = True, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "BOTTLE_TEST_TOKEN": SECRET, **(env or {})}
    return sh(
        sys.executable, "-m", "bottle_tui", "--home", str(home), *args, check=check, timeout=timeout, env=full_env
    )


@dataclass
class Bottle:
    slug: str
    home: Path
    fake_ip: str = ""

    @property
    def project(self) -> str:
        return "claude-bottle-" + self.slug

    @property
    def agent(self) -> str:
        return engine.container_name(self.project, "agent")

    @property
    def sidecars(self) -> str:
        return engine.container_name(self.project, "sidecars")

    @property
    def state(self) -> Path:
        return self.home / "state" / self.slug

    def exec(self, *argv: str, check: bool = False, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return sh("docker", "exec", self.agent, *argv, check=check, timeout=timeout)

    def network(self, name: str) -> str:
        return f"{self.project}_{name}"


def start_bottle(home: Path, agent: str = "tester", env: dict[str, str] | None = None) -> Bottle:
    out = cli(home, "start", agent, "--yes", "--detach", env=env)
    return Bottle(out.stdout.strip().splitlines()[-1], home)


def wait_for_fillers(home: Path, timeout: float = 180) -> None:
    """Until no `bottle-tui pool fill` of ``home`` runs (a start of a pooled bottle leaves one
    running, detached, to refill its pool)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = False
        for proc in Path("/proc").iterdir():
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            running = running or (b"pool" in argv and b"fill" in argv and str(home).encode() in argv)
        if not running:
            return
        time.sleep(0.1)
    raise AssertionError(f"a pool fill of {home} still runs after {timeout} s")


def run_fake_internet(pki: Path, image: str = "bottle-tui/sidecars:latest") -> str:
    """Start a container of our own that plays the internet (every name egress may reach resolves
    to it once connect_fake_internet joins it to a bottle). Its home network is internal: the
    fake internet itself has no way out. Returns its name."""
    name = f"bottle-tui-test-fake-internet-{uuid.uuid4().hex[:6]}"
    sh("docker", "network", "create", "--internal", "--label", TEST_LABEL, name)
    sh(
        "docker",
        "run",
        "-d",
        "--name",
        name,
        "--label",
        TEST_LABEL,
        "--network",
        name,
        "--entrypoint",
        "python3",
        "-v",
        f"{FAKE_DIR}:/srv:ro",
        "-v",
        f"{pki}:/pki:ro",
        "-e",
        f"FAKE_ANTHROPIC_KEY_SHA256={hashlib.sha256(SECRET.encode()).hexdigest()}",
        image,
        "/srv/server.py",
        "/pki/server.pem",
        "/pki/server-key.pem",
    )
    return name


def remove_fake_internet(name: str) -> None:
    sh("docker", "rm", "-f", name, check=False)
    sh("docker", "network", "rm", name, check=False)


def connect_fake_internet(bottle: Bottle, fake: str, extra_hosts: tuple[str, ...] = ()) -> str:
    """Join the fake internet to the bottle's egress network; returns its address there."""
    aliases = [a for host in (*FAKE_NAMES, *extra_hosts) for a in ("--alias", host)]
    sh("docker", "network", "connect", *aliases, bottle.network("egress"), fake)
    inspect = sh("docker", "inspect", "--format", "{{json .NetworkSettings.Networks}}", fake)
    return json.loads(inspect.stdout)[bottle.network("egress")]["IPAddress"]


def stop_bottle(bottle: Bottle, fake: str | None = None) -> None:
    if fake:
        sh("docker", "network", "disconnect", "-f", bottle.network("egress"), fake, check=False)
    cli(bottle.home, "stop", bottle.slug, check=False)


def labelled(kind: str, label: str) -> list[str]:
    """IDs of containers (kind "ps") or networks (kind "network") that carry ``label``."""
    argv = ["docker", "ps", "-aq"] if kind == "ps" else ["docker", "network", "ls", "-q"]
    return sh(*argv, "--filter", f"label={label}").stdout.split()


# --- the fake git host (fake_internet/git_server.py) the git gate mirrors ---------------------------
GIT_HOST = "git.fake.test"
GIT_PORT = 8443
GIT_ROOT = "/tmp/git"  # inside the fake-internet container
GIT_SECRET = "gho-test-" + uuid.uuid4().hex  # the operator's git token; only the gate may hold it
GIT_CREDENTIAL = f"x-access-token:{GIT_SECRET}"
UPSTREAM_REPO = f"{GIT_ROOT}/repo.git"
UPSTREAM_URL = f"https://{GIT_HOST}:{GIT_PORT}/repo.git"

# The upstream as the operator's git host has it: one commit on main, and a policy of its own that
# refuses branches named upstream-refuses/* (to show the agent sees upstream's refusal).
SEED_UPSTREAM = f"""
set -e
rm -rf {UPSTREAM_REPO} /tmp/seed
git init -q --bare -b main {UPSTREAM_REPO}
git init -q -b main /tmp/seed
cd /tmp/seed
echo '# upstream' > README.md
git add README.md
git -c user.name=op -c user.email=op@example.test commit -qm 'upstream: first commit'
git push -q {UPSTREAM_REPO} main
cat > {UPSTREAM_REPO}/hooks/pre-receive <<'HOOK'
#!/bin/sh
while read old new ref; do
  case "$ref" in refs/heads/upstream-refuses/*) echo "upstream policy: $ref is not accepted here" >&2; exit 1 ;; esac
done
HOOK
chmod +x {UPSTREAM_REPO}/hooks/pre-receive
"""


def make_fake_git_cert(folder: Path) -> None:
    """A certificate for GIT_HOST signed by make_fake_pki's CA (same folder), so the gate trusts it
    through the same CLAUDE_BOTTLE_UPSTREAM_CA that egress trusts."""
    key, csr, cert, ext = (
        folder / n for n in ("git-server-key.pem", "git-server.csr", "git-server.pem", "git-san.ext")
    )
    sh(
        "openssl",
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(key),
        "-out",
        str(csr),
        "-subj",
        f"/CN={GIT_HOST}",
    )
    ext.write_text(
        f"subjectAltName=DNS:{GIT_HOST}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
    )
    sh(
        "openssl",
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(folder / "ca.pem"),
        "-CAkey",
        str(folder / "ca-key.pem"),
        "-CAcreateserial",
        "-days",
        "2",
        "-sha256",
        "-extfile",
        str(ext),
        "-out",
        str(cert),
    )
    for path in (key, cert):
        path.chmod(0o644)


def start_fake_git_host(fake: str, credential: str) -> None:
    """Run git_server.py beside server.py in the fake internet; returns once it answers."""
    sh(
        "docker",
        "exec",
        "-d",
        fake,
        "python3",
        "/srv/git_server.py",
        "/pki/git-server.pem",
        "/pki/git-server-key.pem",
        str(GIT_PORT),
        GIT_ROOT,
        credential,
    )
    probe = f"import socket,time\nfor _ in range(100):\n try: socket.create_connection(('127.0.0.1', {GIT_PORT}), 1); break\n except OSError: time.sleep(0.1)\nelse: raise SystemExit(1)"
    sh("docker", "exec", fake, "python3", "-c", probe)


def pane_text(pane) -> str:
    """What a tmux pane shows (libtmux's capture-pane)."""
    return "\n".join(pane.capture_pane())


def wait_in_pane(pane, needle: str, timeout: float = 60.0) -> None:
    from tests.support.waiting import wait_for

    try:
        wait_for(lambda: needle in pane_text(pane), timeout=timeout, what=f"{needle!r} in the pane", interval=0.2)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the pane shows:\n{pane_text(pane)}") from None
