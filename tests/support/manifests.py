"""Manifests the host tests and the smolvm contract tests share: one agent and one bottle of each kind of route."""

from pathlib import Path

AGENT = """---
bottle: web
model: sonnet
claude_args: [--verbose]
---
Be careful.
"""
BOTTLE = """---
description: a bottle for the tests
egress:
  routes:
    - host: api.example.com
      ports: [443]
      methods: [POST]
      paths: ["/v1/*"]
      auth: {scheme: header, header: x-api-key, token_env: EXAMPLE_KEY}
    - host: "*.docs.example.com"
git: {upstream: "https://git.example.com/org/repo.git", branch: trunk, credentials_env: GIT_TOKEN}
env: {TZ: UTC, DEBUG: 1}
resources: {cpus: 1.5, memory: 2g, pids: 300}
---
"""


def write_home(home, bottle: str = BOTTLE):
    """A home with agent coder (AGENT) in bottle web (``bottle``, default BOTTLE)."""
    (home / "agents").mkdir(parents=True)
    (home / "bottles").mkdir()
    (home / "agents" / "coder.md").write_text(AGENT)
    (home / "bottles" / "web.md").write_text(bottle)
    return home


def plan_of(bottle_text: str = BOTTLE, agent_text: str = AGENT, *, slug: str = "coder-0a1b2c"):  # type: ignore[no-untyped-def]
    """The plan of the agent ``coder`` in the bottle ``web`` of a home that holds only these two."""
    from bottle_tui.manifest import Manifests, parse_agent, parse_bottle
    from bottle_tui.plan import resolve
    from bottle_tui.state import StateDir

    home = Path("/home/op/.claude-bottle")
    agent = parse_agent(home / "agents" / "coder.md", agent_text)
    bottle = parse_bottle(home / "bottles" / "web.md", bottle_text)
    manifests = Manifests(home=home, agents={"coder": agent}, bottles={"web": bottle}, agents_from_defaults=False)
    return resolve(
        manifests,
        "coder",
        slug=slug,
        images={"agent": "bottle-tui/agent:aaa", "sidecars": "bottle-tui/sidecars:bbb"},
        started_at="2026-11-27T00:00:00+00:00",
        state=StateDir(home / "state" / slug),
    )
