"""`bottle-tui serve` (console/web.py): the token on every connection, loopback unless chosen
otherwise, and the console for real in Debian's headless Chromium: both panes show, and a
proposal approved from the browser is decided. The served console finds no docker on its PATH
(it shows the engine banner), so this test needs no engine and touches none."""

from __future__ import annotations

import os
import re
from pathlib import Path

import aiohttp
import pytest

from bottle_tui import proposals
from bottle_tui.cli import main
from bottle_tui.console.web import check_host, is_loopback
from bottle_tui.errors import BottleError
from tests.host.console_snapshot_app import AGENT, BOTTLE
from tests.support.browser import CHROMIUM, Browser
from tests.support.console import cli_process, write_proposal

SLUG = "implementer-aaaaaa"


def test_loopback_by_default_and_another_address_only_when_chosen() -> None:
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        assert is_loopback(host) and check_host(host, allow_remote=False) is None
    with pytest.raises(BottleError, match=r"^serve: --host 0.0.0.0 is not loopback, .* pass --allow-remote"):
        check_host("0.0.0.0", allow_remote=False)
    risk = check_host("192.0.2.10", allow_remote=True)
    assert risk is not None and "\n" not in risk
    assert risk.startswith("warning: --host 192.0.2.10 is not loopback: anyone who can reach it")


def test_serve_on_a_public_address_without_the_choice_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--host", "0.0.0.0"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("bottle-tui: error: serve: --host 0.0.0.0 is not loopback")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    """A real `bottle-tui serve` on a home with one queued proposal; yields (url, home, proposal)."""
    root = tmp_path_factory.mktemp("serve")
    home = root / "home"
    for rel, text in (("agents/implementer.md", AGENT), ("bottles/dev.md", BOTTLE)):
        (home / rel).parent.mkdir(parents=True, exist_ok=True)
        (home / rel).write_text(text)
    p = write_proposal(home, SLUG, host="browser.example.org", reason="asked from the <b>browser</b> test")
    with cli_process(home, "serve", "--port", "0") as proc:
        assert proc.stdout is not None
        url = proc.stdout.readline().decode().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/[A-Za-z0-9_-]{32}/", url), url
        yield url, home, p


async def test_every_request_without_the_token_is_refused(served) -> None:
    url, _, _ = served
    origin, token = url.rstrip("/").rsplit("/", 1)
    async with aiohttp.ClientSession() as session:
        for path in ("/", "/ws", "/static/js/textual.js", f"/{token[:-1]}/", f"/{token}x/", f"/x/{token}/"):
            async with session.get(origin + path) as r:
                assert r.status == 403, path
                assert "needs the token" in await r.text()
        async with session.get(url) as r:
            assert r.status == 200
            page = await r.text()
        # The page asks nothing of any host but this server (textual-serve's own page loads a font
        # from a public service).
        for ref in re.findall(r'(?:src|href)=["\']([^"\']+)', page) + re.findall(r'url\("([^"]+)"\)', page):
            assert ref.startswith(url), ref
        assert f'data-session-websocket-url="ws://{origin.split("//")[1]}/{token}/ws"' in page
        async with session.get(f"{url}static/js/textual.js") as r:
            assert r.status == 200
        for ws_url, headers in (
            (f"{origin.replace('http', 'ws')}/{token[:-1]}/ws", {"Origin": origin}),  # a wrong token
            (f"{origin.replace('http', 'ws')}/ws", {"Origin": origin}),  # none
            (f"{url.replace('http', 'ws')}ws", {"Origin": "http://evil.example"}),  # another site's page
            (f"{url.replace('http', 'ws')}ws", {}),  # no origin at all
        ):
            with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
                await session.ws_connect(ws_url, headers=headers)
            assert exc.value.status == 403, ws_url


@pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("BOTTLE_REQUIRE_DOCKER"),
    reason="chromium is not installed (scripts/engine.sh installs it, as `make test` and .ci/run do)",
)
async def test_the_console_in_a_real_browser_approves_a_proposal(served, tmp_path: Path) -> None:
    url, home, p = served
    browser = await Browser(tmp_path / "chromium").start()
    try:
        await browser.open(url)
        shown = await browser.until_text(["Proposals", "Agents", "SLUG", "browser.example.org", "1 pending"])
        assert "asked from the <b>browser</b> test" in shown  # agent text shown literally
        await browser.press("tab")  # to the proposals pane: its keys show in the footer
        await browser.until_text(["a Approve"])
        await browser.press("a")
        await browser.until_text(["o once · a always"])
        await browser.press("a")  # always
        await browser.until_text(["0 pending"])
        decided = proposals.load(p.path)
        assert decided.status == "approved" and decided.data["decision"]["scope"] == "always"
        assert decided.data["decision"]["by"].endswith("(console)")
    finally:
        await browser.close()
