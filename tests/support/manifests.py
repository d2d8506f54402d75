"""Manifests the host tests and the smolvm contract tests share: one agent and one bottle of each kind of route."""

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
