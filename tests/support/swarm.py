"""The swarm lab (scripts/swarm-lab.sh) for tests and benchmarks, and a home whose bottles run on it."""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.bottles import SECRET, sh

REPO = Path(__file__).resolve().parents[2]
LAB_SCRIPT = REPO / "scripts" / "swarm-lab.sh"
LAB_DIR = Path(os.environ.get("BOTTLE_TUI_LAB_DIR", "/var/lib/bottle-tui-lab"))
MANAGER = "bottle-tui-lab"
NODES = ("manager", "worker1", "worker2")
NODE_ADDRESSES = ("10.213.47.2", "10.213.47.3", "10.213.47.4")  # the lab's own (scripts/swarm-lab.sh)


def node_context(node: str) -> str:
    """``node``: a lab node (manager, worker1) or a node's hostname (bottle-tui-lab-manager)."""
    return node if node.startswith(MANAGER + "-") else f"{MANAGER}-{node}"


def lab_is_up() -> bool:
    return sh(str(LAB_SCRIPT), "status", check=False).stdout.count("swarm active") == len(NODES)


def lab_up() -> float:
    """Bring the lab up (idempotent); the seconds it took."""
    t0 = time.monotonic()
    sh(str(LAB_SCRIPT), "up", sys.executable, timeout=900)
    return time.monotonic() - t0


def lab_down() -> None:
    sh(str(LAB_SCRIPT), "down", check=False, timeout=300)


def manager(*args: str, check: bool = True, timeout: float = 60):  # type: ignore[no-untyped-def]
    return sh("docker", "--context", MANAGER, *args, check=check, timeout=timeout)


def on_node(node: str, *args: str, check: bool = True, timeout: float = 60):  # type: ignore[no-untyped-def]
    return sh("docker", "--context", node_context(node), *args, check=check, timeout=timeout)


AGENT = """\
    ---
    bottle: {bottle}
    description: a swarm test agent
    ---
    You are a test agent.
    """
BOTTLE = """\
    ---
    description: a swarm test bottle
    backend: swarm
    egress:
      routes:
        - host: allowed.fake.test
          auth: {{scheme: header, header: X-Api-Key, token_env: BOTTLE_TEST_TOKEN}}
    {extra}
    ---
    """


def write_swarm_home(home: Path, *, extra: dict[str, str] | None = None) -> Path:
    """A home whose agent ``tester`` runs in the swarm bottle ``lab``; ``extra``: more bottles
    (name -> extra front matter lines), each with an agent of the same name."""
    (home / "agents").mkdir(parents=True, exist_ok=True)
    (home / "bottles").mkdir(parents=True, exist_ok=True)
    (home / "config.yaml").write_text(f"swarm: {{context: {MANAGER}}}\n")
    for agent, bottle, lines in (("tester", "lab", ""), *((n, n, t) for n, t in (extra or {}).items())):
        (home / "agents" / f"{agent}.md").write_text(textwrap.dedent(AGENT.format(bottle=bottle)))
        (home / "bottles" / f"{bottle}.md").write_text(textwrap.dedent(BOTTLE.format(extra=lines)))
    return home


def swarm_cli(home: Path, *args: str, check: bool = True, timeout: float = 300):  # type: ignore[no-untyped-def]
    """The CLI with ``home`` as CLAUDE_BOTTLE_HOME (the swarm of `ls` is that home's)."""
    env = {**os.environ, "CLAUDE_BOTTLE_HOME": str(home), "BOTTLE_TEST_TOKEN": SECRET}
    return sh(sys.executable, "-m", "bottle_tui", *args, check=check, timeout=timeout, env=env)


@dataclass
class SwarmBottle:
    slug: str
    home: Path

    @property
    def meta(self) -> dict:  # type: ignore[type-arg]
        return json.loads((self.home / "state" / self.slug / "metadata.json").read_text())

    @property
    def node(self) -> str:
        return str(self.meta["node"])

    def service(self, role: str) -> str:
        return f"claude-bottle-{self.slug}-{role}"

    def container(self, role: str) -> str:
        out = on_node(self.node, "ps", "-q", "--filter", f"label=com.docker.swarm.service.name={self.service(role)}")
        return out.stdout.split()[0]

    def exec(self, *argv: str, role: str = "agent", check: bool = False, timeout: float = 60):  # type: ignore[no-untyped-def]
        return on_node(self.node, "exec", self.container(role), *argv, check=check, timeout=timeout)


def start_swarm_bottle(home: Path, agent: str = "tester") -> SwarmBottle:
    out = swarm_cli(home, "start", agent, "--yes", "--detach")
    return SwarmBottle(out.stdout.strip().splitlines()[-1], home)


def leftovers(slug: str) -> list[str]:
    """What of bottle ``slug`` the swarm still holds: services, networks, secrets, configs, and
    containers and volumes on any node (one line each)."""
    found = []
    label = f"label=dev.bottle-tui.slug={slug}"
    for kind in ("service", "network", "secret", "config"):
        found += [f"{kind} {i}" for i in manager(kind, "ls", "-q", "--filter", label).stdout.split()]
    for node in NODES:
        found += [f"container {i} on {node}" for i in on_node(node, "ps", "-aq", "--filter", label).stdout.split()]
        found += [
            f"volume {v} on {node}" for v in on_node(node, "volume", "ls", "-q", "--filter", label).stdout.split()
        ]
    return found
