"""`bottle-tui serve`: the same console in a browser, through textual-serve (aiohttp).

Each browser connection runs its own `bottle-tui console` process, which textual-serve drives over
a websocket. The server listens on loopback unless told otherwise, and every request (the page,
its static files, the websocket, downloads) must carry the random token the server printed: all
routes live under ``/<token>/``, and a middleware refuses anything else before aiohttp routes it.
The websocket must also come from the page's own origin (no other site can open it, even with a
guessed path). The page is the project's own template: no font or script from anywhere but this
server.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import secrets
import shlex
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import BottleError
from ..notify import is_loopback

TEMPLATES = Path(__file__).with_name("web")
REFUSED = "bottle-tui serve: this address needs the token that `bottle-tui serve` printed; open that URL\n"
RISK = (
    "warning: --host {host} is not loopback: anyone who can reach it and learns the URL drives this console "
    "(approves proposals, stops bottles), over plain HTTP that anyone on the path can read"
)


def check_host(host: str, allow_remote: bool) -> str | None:
    """None for loopback; the one-line risk for another address when it was chosen explicitly;
    an error otherwise."""
    if is_loopback(host):
        return None
    if not allow_remote:
        raise BottleError(
            f"serve: --host {host} is not loopback, so anyone who can reach it and learns the URL drives this console; "
            "pass --allow-remote as well if that is what you want"
        )
    return RISK.format(host=host)


def console_command(home: Path, theme: str | None) -> str:
    """The shell command textual-serve runs for each connection (it takes a command line)."""
    argv = [sys.executable, "-m", "bottle_tui", "--home", str(home)]
    if theme:
        argv += ["--theme", theme]
    return shlex.join([*argv, "console"])


def _same_origin(origin: str | None, host: str) -> bool:
    if not origin:
        return False
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and parts.netloc == host


def make_server(command: str, host: str, port: int, token: str) -> Any:
    """A textual-serve Server whose routes live under /<token>/ and refuse everything else."""
    from aiohttp import web
    from textual_serve.server import Server

    prefix = f"/{token}"

    @web.middleware
    async def require_token(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        first = request.path.split("/", 2)[1] if request.path.startswith("/") else ""
        if not hmac.compare_digest(first.encode(), token.encode()):
            return web.Response(status=403, text=REFUSED)
        if request.path == f"{prefix}/ws" and not _same_origin(request.headers.get("Origin"), request.host):
            return web.Response(status=403, text="bottle-tui serve: the websocket is for this page's own origin only\n")
        response = await handler(request)
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        return response

    class ConsoleServer(Server):
        async def _make_app(self) -> web.Application:
            import aiohttp_jinja2
            import jinja2

            app = web.Application(middlewares=[require_token])
            aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(str(TEMPLATES)))
            app.add_routes(
                [
                    web.get(f"{prefix}/", self.handle_index, name="index"),
                    web.get(f"{prefix}/ws", self.handle_websocket, name="websocket"),
                    web.get(f"{prefix}/download/{{key}}", self.handle_download, name="download"),
                    web.static(f"{prefix}/static", self.statics_path, name="static"),
                ]
            )
            return app

        async def handle_index(self, request: web.Request) -> web.Response:
            import aiohttp_jinja2

            # The page's own URLs are built from the Host it was asked by (localhost or 127.0.0.1,
            # or the address a remote browser used), so its websocket is same-origin.
            base = f"{request.scheme}://{request.host}"
            context = {
                "title": "bottle-tui",
                "static": f"{base}{prefix}/static/",
                "websocket": f"{'wss' if request.scheme == 'https' else 'ws'}://{request.host}{prefix}/ws",
                "font_size": 16,
            }
            return aiohttp_jinja2.render_template("console.html", request, context)

    return ConsoleServer(command, host=host, port=port, title="bottle-tui")


async def _serve(server: Any, host: str, port: int, token: str, say: Callable[[str], None]) -> None:
    from aiohttp import web

    runner = web.AppRunner(await server._make_app(), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise BottleError(
            f"serve: cannot listen on {host}:{port}: {exc.strerror or exc}; pick another --port"
        ) from None
    sockets = getattr(site._server, "sockets", None) or []
    bound = sockets[0].getsockname()[1] if sockets else port
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{bound}/{token}/"
    print(url, flush=True)
    say("serving the console at that URL (each browser tab runs its own console); Ctrl+C stops it")
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def serve(
    home: Path, *, host: str, port: int, theme: str | None, allow_remote: bool, say: Callable[[str], None]
) -> int:
    """Serve the console until interrupted; prints the URL (with its token) on stdout."""
    risk = check_host(host, allow_remote)
    if risk:
        say(risk)
    token = secrets.token_urlsafe(24)
    # The served consoles run without a terminal of this shell: no tmux pane to split.
    for name in ("TMUX", "TMUX_PANE"):
        os.environ.pop(name, None)
    server = make_server(console_command(home, theme), host, port, token)
    try:
        asyncio.run(_serve(server, host, port, token, say))
    except KeyboardInterrupt:
        say("serve: stopped")
    return 0
