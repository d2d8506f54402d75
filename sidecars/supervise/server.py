"""The bottle's supervise daemon: an MCP server (official SDK, streamable HTTP) through which the agent
asks the operator for access, and which turns egress's blocks into draft proposals.

It listens only on the bundle's address on the ``internal`` network (the name ``supervise``) and
answers only requests whose Host is ``supervise``. None of its tools decides anything: a request
writes a pending proposal into the queue and waits for the operator's decision, which only the
host (bottle-tui) writes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import socket
import sys
from typing import Annotated, Any

import h11
import inbox  # the daemon's own folder, on its pythonpath (daemons.json)
import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import Field
from uvicorn.protocols.http.h11_impl import H11Protocol

from bottle_contract import layout, ports
from bottle_contract.policy import PolicyError, load_policy
from bottle_contract.serving import SUPERVISE_LIMITS, SUPERVISE_MAX_SESSIONS

log = logging.getLogger("supervise")

STATE_DIR = os.environ.get("BOTTLE_SUPERVISE_STATE", "/state/supervise")
EGRESS_DIR = os.environ.get("BOTTLE_EGRESS_STATE", "/state/egress")
SLUG = os.environ.get("BOTTLE_SLUG", "unknown")
DEFAULT_TIMEOUT = 900


def load_timeout(state_dir: str) -> int:
    """supervise.timeout_seconds of the bottle, from the settings.json the host writes at bring-up."""
    try:
        with open(os.path.join(state_dir, "settings.json"), encoding="utf-8") as f:
            value = json.load(f).get("timeout_seconds")
    except (OSError, ValueError, AttributeError):
        return DEFAULT_TIMEOUT
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else DEFAULT_TIMEOUT


TIMEOUT = load_timeout(STATE_DIR)
NAME = "supervise"
TAIL_INTERVAL = 0.1
PROGRESS_EVERY = 10.0

INSTRUCTIONS = (
    "This bottle has no route to the internet except the routes its operator allows. When a request "
    "is blocked (HTTP 403 with a body starting 'egress: blocked'), ask for the route with "
    "request-egress-route and say why; the call waits for the operator's decision. If it says the "
    "request is still pending, carry on with other work and check later with list-my-requests."
)

queue: inbox.Queue | None = None


def q() -> inbox.Queue:
    assert queue is not None
    return queue


def _wait_for(wait_seconds: int | None) -> float:
    if wait_seconds is None:
        return float(TIMEOUT)
    return float(max(0, min(wait_seconds, TIMEOUT)))


async def _ask(kind: str, change: dict[str, Any], reason: str, wait_seconds: int | None, ctx: Context) -> str:
    try:
        p = q().request(kind, change, inbox.check_reason(reason))
    except inbox.InputError as e:
        raise ToolError(str(e)) from None
    total = _wait_for(wait_seconds)
    waited, decided = 0.0, None
    while True:
        step = min(PROGRESS_EVERY, total - waited)
        decided = await q().wait(p["id"], step)
        waited += step
        if decided is not None or waited >= total:
            break
        # Clients that asked for progress (and their idle timers) hear that the call is alive.
        await ctx.report_progress(waited, total, f"waiting for the operator to decide request {p['id']}")
    if decided is None:
        return (
            f"Still pending: the operator has not decided request {p['id']} yet. Carry on with other work and "
            f"check later with list-my-requests (it stays in the queue until decided).\n"
            + json.dumps(inbox.for_agent(q().get(p["id"]) or p), indent=2)
        )
    out = inbox.for_agent(decided)
    if decided["status"] == "rejected":
        head = f"Rejected by the operator. Their note: {out['note'] or '(none)'}"
    elif decided["status"] == "modified":
        head = "Approved with changes: only the final change below is allowed (it is live now)."
    else:
        head = "Approved: the change below is live now; retry your request."
    return head + "\n" + json.dumps(out, indent=2)


def build() -> MCPServer:
    mcp = MCPServer(NAME, instructions=INSTRUCTIONS, log_level="WARNING")

    @mcp.tool(name="request-egress-route")
    async def request_egress_route(
        host: Annotated[
            str,
            Field(
                description="Host name to reach, e.g. api.example.com ('*.example.com' for its subdomains). No scheme, port or path.",
                max_length=300,
            ),
        ],
        reason: Annotated[
            str,
            Field(
                description="Why you need it, in a sentence or two; the operator reads this.",
                max_length=inbox.MAX_REASON,
            ),
        ],
        ports: Annotated[
            list[int] | None, Field(description="Ports; default [80, 443].", max_length=inbox.MAX_ITEMS)
        ] = None,
        methods: Annotated[
            list[str] | None,
            Field(
                description='HTTP methods, e.g. ["GET"]; default any. Ask for the fewest you need.',
                max_length=inbox.MAX_ITEMS,
            ),
        ] = None,
        paths: Annotated[
            list[str] | None,
            Field(
                description="Path globs starting with '/', e.g. [\"/v1/models/*\"]; default any.",
                max_length=inbox.MAX_ITEMS,
            ),
        ] = None,
        wait_seconds: Annotated[
            int | None, Field(description="How long to wait for the decision (default: the bottle's limit).", ge=0)
        ] = None,
        ctx: Context = None,  # type: ignore[assignment]  (the SDK passes it)
    ) -> str:
        """Ask the operator to allow HTTP(S) requests to a host the egress proxy blocks. Waits for the decision and returns it: approved (retry now), modified (only the final change is allowed), or rejected (with the operator's note). On timeout the request stays pending: check it with list-my-requests."""
        try:
            change = inbox.route_change(host, ports, methods, paths)
        except inbox.InputError as e:
            raise ToolError(str(e)) from None
        return await _ask("egress-route", change, reason, wait_seconds, ctx)

    @mcp.tool(name="request-dlp-exemption")
    async def request_dlp_exemption(
        route: Annotated[
            str,
            Field(description="Host of the route whose requests DLP blocked, e.g. api.example.com.", max_length=300),
        ],
        rule: Annotated[
            str,
            Field(
                description="Id of the gitleaks rule that matched (from the block message), e.g. generic-api-key.",
                max_length=100,
            ),
        ],
        reason: Annotated[
            str,
            Field(
                description="Why the matched text is not a secret or must be sent anyway.", max_length=inbox.MAX_REASON
            ),
        ],
        wait_seconds: Annotated[
            int | None, Field(description="How long to wait for the decision (default: the bottle's limit).", ge=0)
        ] = None,
        ctx: Context = None,  # type: ignore[assignment]  (the SDK passes it)
    ) -> str:
        """Ask the operator to exempt one DLP rule on one route, when the proxy blocked a request for carrying what looks like a secret. Waits for the decision like request-egress-route."""
        try:
            change = {"host": inbox.check_host(route, "route"), "rule": inbox.check_rule(rule)}
        except inbox.InputError as e:
            raise ToolError(str(e)) from None
        return await _ask("dlp-exemption", change, reason, wait_seconds, ctx)

    @mcp.tool(name="list-egress-routes")
    def list_egress_routes() -> str:
        """The egress routes in force now: which hosts, ports, methods and paths this bottle may reach."""
        try:
            policy = load_policy(os.path.join(EGRESS_DIR, layout.ROUTES))
        except PolicyError:
            raise ToolError("the routes in force cannot be read right now; try again shortly") from None
        routes = [
            {
                "host": r.host,
                "ports": list(r.ports),
                "methods": list(r.methods),
                "paths": list(r.paths),
                "schemes": list(r.schemes),
                "credentials_injected": r.auth is not None,
            }
            for r in policy.routes
        ]
        return json.dumps({"routes": routes, "note": "empty methods/paths mean any"}, indent=2)

    @mcp.tool(name="list-my-requests")
    def list_my_requests() -> str:
        """This bottle's requests (and drafts of blocked requests) with their status and the operator's decision."""
        return json.dumps([inbox.for_agent(p) for p in q().all()], indent=2)

    @mcp.tool(name="report-blocked")
    def report_blocked(
        host: Annotated[str, Field(description="Host of the blocked request.", max_length=300)],
        why: Annotated[
            str,
            Field(description="Why you need it; added to the draft the operator sees.", max_length=inbox.MAX_REASON),
        ],
        method: Annotated[str, Field(description="HTTP method of the blocked request.", max_length=10)] = "GET",
        path: Annotated[
            str, Field(description="Path of the blocked request, e.g. /simple/requests/.", max_length=inbox.MAX_PATH)
        ] = "/",
        port: Annotated[int, Field(description="Port of the blocked request.", ge=1, le=65535)] = 443,
    ) -> str:
        """Tell the operator why a request that egress blocked matters, without waiting: it adds your words to the draft egress made of it. Use request-egress-route instead to wait for a decision."""
        try:
            inbox.check_host(host)
            p = q().note_block(method, host, port, path, context=inbox.check_reason(why))
        except inbox.InputError as e:
            raise ToolError(str(e)) from None
        if p is None:
            raise ToolError("that request cannot become a route (check host, method and path)")
        return "Added to the operator's queue as a draft.\n" + json.dumps(inbox.for_agent(p), indent=2)

    return mcp


async def tail_egress(q_: inbox.Queue) -> None:
    tail = inbox.EgressTail(
        os.path.join(EGRESS_DIR, layout.REQUESTS_LOG), os.path.join(STATE_DIR, layout.EGRESS_CURSOR)
    )
    intake = inbox.Intake(q_, tail, os.path.join(EGRESS_DIR, layout.ROUTES))
    while True:
        try:
            if await asyncio.to_thread(intake.step) and os.getpid() != 1:
                os.kill(1, signal.SIGHUP)  # init forwards it to egress: reload the narrowed policy now
        except Exception as e:
            log.warning("supervise: reading egress's log failed: %s", e)
        await asyncio.sleep(TAIL_INTERVAL)


async def mark_ready(host: str, port: int) -> None:
    ready = os.path.join(STATE_DIR, "ready")
    while True:
        try:
            _, w = await asyncio.open_connection(host, port)
            w.close()
            break
        except OSError:
            await asyncio.sleep(0.05)
    inbox.atomic_write(
        ready, json.dumps({"pid": os.getpid(), "host": host, "port": port, "at": inbox.now_iso()}).encode(), mode=0o644
    )


def listen_address(name: str) -> str:
    """This container's address on the internal network: the one the ``supervise`` alias names."""
    return socket.getaddrinfo(name, None, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]


class BoundedH11(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with the bundle's limits (bottle_contract.serving): a connection
    has ``head_timeout`` seconds, from accept or from its last answer, to send a whole request head
    (uvicorn alone waits for ever for a first byte, and a byte at a time resets its keep-alive
    timer), and a body that stops arriving for ``read_timeout`` seconds ends its connection; at
    ``max_connections`` the one that has waited longest for its head is closed to make room.
    Asynchronous, so no connection costs a thread; the bookkeeping is O(1) a connection,
    as a flood of them must not cost the event loop more than it costs the agent."""

    limits = SUPERVISE_LIMITS
    # Of the one server in this process: connections waiting for a head, longest first, and
    # those closed here that the loop has not reported lost yet.
    _waiting: dict[BoundedH11, None] = {}
    _closing: set[BoundedH11] = set()
    _head_timer: asyncio.TimerHandle | None = None
    _body_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()
        if len(self.connections) - len(self._closing) > self.limits.max_connections:
            victim = next(iter(self._waiting))  # the longest waiting (self when every other is served)
            self._close(victim)

    def _close(self, conn: BoundedH11) -> None:
        BoundedH11._waiting.pop(conn, None)
        BoundedH11._closing.add(conn)
        conn.transport.close()

    def _arm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        BoundedH11._waiting.pop(self, None)
        BoundedH11._waiting[self] = None
        self._head_timer = self.loop.call_later(self.limits.head_timeout, self._head_timed_out)

    def _head_timed_out(self) -> None:
        if self in self._waiting and not self.transport.is_closing():
            self._close(self)

    def handle_events(self) -> None:
        super().handle_events()
        if self in self._waiting and self.cycle is not None and not self.cycle.response_complete:
            BoundedH11._waiting.pop(self, None)  # a whole head arrived: the request is being served
            if self._head_timer is not None:
                self._head_timer.cancel()
        # A body that stops arriving for read_timeout ends the connection (uvicorn has no such timer).
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        if self.conn.their_state is h11.SEND_BODY and not self.transport.is_closing():
            self._body_timer = self.loop.call_later(self.limits.read_timeout, self._body_stalled)

    def _body_stalled(self) -> None:
        if self.conn.their_state is h11.SEND_BODY and not self.transport.is_closing():
            self._close(self)

    def on_response_complete(self) -> None:
        # Armed first: a pipelined request that the parent starts serving disarms it again.
        self._arm_head_timer()
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        BoundedH11._waiting.pop(self, None)
        BoundedH11._closing.discard(self)
        super().connection_lost(exc)


async def serve_http(mcp: MCPServer, host: str, port: int, security: TransportSecuritySettings) -> None:
    """The SDK's streamable-HTTP app on uvicorn, as ``run_streamable_http_async`` runs it, with the
    bundle's connection limits (BoundedH11)."""
    app = mcp.streamable_http_app(
        streamable_http_path="/mcp",
        transport_security=security,
        max_request_body_size=256 * 1024,
        host=host,
        max_sessions=SUPERVISE_MAX_SESSIONS,
        # the SDK's 30 minutes, longer when a call may wait longer for the operator
        session_idle_timeout=max(1800, TIMEOUT + 60),
    )
    # uvicorn's warnings name each bad request the agent sends: noise it could provoke at will.
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="error",
        http=BoundedH11,
        timeout_keep_alive=int(SUPERVISE_LIMITS.head_timeout),
        h11_max_incomplete_event_size=SUPERVISE_LIMITS.max_head,
    )
    await uvicorn.Server(config).serve()


async def main_async(host: str, port: int) -> None:
    global queue
    queue = inbox.Queue(STATE_DIR, SLUG)
    try:
        os.unlink(os.path.join(STATE_DIR, "ready"))
    except FileNotFoundError:
        pass
    mcp = build()
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[f"{NAME}:{port}", f"{NAME}:*", f"{host}:{port}", f"127.0.0.1:{port}"],
        allowed_origins=[],
    )
    tasks = [asyncio.create_task(tail_egress(queue)), asyncio.create_task(mark_ready(host, port))]
    try:
        await serve_http(mcp, host, port, security)
    finally:
        for t in tasks:
            t.cancel()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=ports.SUPERVISE)
    ap.add_argument("--host", help="address to listen on (default: the address of the name --listen-name)")
    ap.add_argument("--listen-name", default=NAME)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        host = args.host or listen_address(args.listen_name)
    except OSError as e:
        print(f"supervise: cannot resolve {args.listen_name!r} to an address to listen on: {e}", file=sys.stderr)
        return 1
    print(
        f"supervise: listening on {host}:{args.port} (bottle {SLUG}, decisions time out after {TIMEOUT} s)",
        file=sys.stderr,
        flush=True,
    )
    asyncio.run(main_async(host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
