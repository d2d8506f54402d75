"""Where each daemon of the bundle listens. The host renders these into the compose file and the
agent's environment; the daemons listen on them. Nothing else names a port number."""

from __future__ import annotations

EGRESS = 8080  # the agent's HTTP(S) proxy (mitmdump)
SUPERVISE = 8765  # the agent's MCP server
STATUS = 8766  # claude's hooks in the agent report here
GIT_GATE = 8418  # the agent's git remote (smart HTTP, git http-backend)
