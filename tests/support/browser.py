"""A real headless Chromium (Debian's ``chromium``) driven over the DevTools protocol, with
aiohttp's websocket client (aiohttp comes with textual-serve). Its network is held to loopback:
every host name but 127.0.0.1 resolves to nothing, and the background services that phone home
(sync, component updates, safe browsing, field trials) are off."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless=new",
    "--no-sandbox",  # the tests run as root in CI
    "--disable-gpu",
    # No WebGL: xterm.js then draws the terminal with its DOM renderer, whose rows a test can read
    # (its WebGL and canvas renderers paint pixels only).
    "--disable-webgl",
    "--disable-3d-apis",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--no-proxy-server",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication",
    "--metrics-recording-only",
    "--safebrowsing-disable-auto-update",
    "--password-store=basic",
    "--window-size=1500,900",
    "--remote-debugging-port=0",
]

KEYS = {  # DevTools key events for the keys the console's test presses
    "tab": {"key": "Tab", "code": "Tab", "windowsVirtualKeyCode": 9},
    "enter": {"key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13, "text": "\r"},
    "escape": {"key": "Escape", "code": "Escape", "windowsVirtualKeyCode": 27},
}


class Browser:
    """One headless Chromium with one page; ``close`` ends it (by its process group)."""

    def __init__(self, profile: Path) -> None:
        if CHROMIUM is None:
            raise RuntimeError("chromium is not installed (scripts/engine.sh installs it: apt-get install chromium)")
        self.profile = profile
        self.proc: subprocess.Popen[bytes] | None = None
        self.session: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)

    async def start(self, timeout: float = 30.0) -> Browser:
        self.profile.mkdir(parents=True, exist_ok=True)
        port_file = self.profile / "DevToolsActivePort"
        port_file.unlink(missing_ok=True)  # a profile used before keeps the last run's
        with open(self.profile / "chromium.log", "wb") as log:  # the child keeps its own copy
            self.proc = subprocess.Popen(
                [CHROMIUM, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not port_file.exists() or not port_file.read_text().strip():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = (self.profile / "chromium.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"chromium did not start: {log}")
            await asyncio.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        self.session = aiohttp.ClientSession()
        async with self.session.get(f"http://127.0.0.1:{port}/json/list") as response:
            pages = [t for t in await response.json() if t.get("type") == "page"]
        self.ws = await self.session.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0)
        return self

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        assert self.ws is not None
        mid = next(self._ids)
        await self.ws.send_str(json.dumps({"id": mid, "method": method, "params": params}))
        while True:
            msg = json.loads((await self.ws.receive()).data)
            if msg.get("id") == mid:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                result: dict[str, Any] = msg.get("result", {})
                return result

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result.get("result", {}).get("value")

    async def open(self, url: str) -> None:
        await self.call("Page.navigate", url=url)

    async def screen_text(self) -> str:
        """What the terminal on the page shows, row by row (xterm.js's DOM renderer)."""
        text = await self.evaluate(
            "Array.from(document.querySelectorAll('.xterm-rows > div')).map(r => r.textContent).join('\\n')"
        )
        return str(text or "")

    async def until_text(self, wanted: list[str], timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = await self.screen_text()
            if all(w in text for w in wanted):
                return text
            await asyncio.sleep(0.1)
        raise AssertionError(f"the page never showed {wanted}; it showed:\n{text}")

    async def press(self, *keys: str) -> None:
        """Keys into the terminal (its hidden textarea has the focus): names from KEYS, or text."""
        await self.evaluate("document.querySelector('.xterm-helper-textarea').focus()")
        for key in keys:
            if key in KEYS:
                spec = KEYS[key]
                await self.call("Input.dispatchKeyEvent", type="keyDown", **spec)
                await self.call(
                    "Input.dispatchKeyEvent", type="keyUp", **{k: v for k, v in spec.items() if k != "text"}
                )
            else:
                await self.call("Input.insertText", text=key)
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.session is not None:
            await self.session.close()
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
