"""The policy editing flow: a bottle's routes.yaml (routes and DLP settings) in the editor dialog,
validated on save, then saved and reloaded through ``ops``."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from .. import ops
from ..errors import BottleError
from ..ops import BottleInfo
from .inert import inert
from .screens import EditorScreen

if TYPE_CHECKING:
    from .app import BottleConsole


def edit_routes(app: BottleConsole, info: BottleInfo) -> None:
    app.run_worker(_edit_routes(app, info), group="dialog", exit_on_error=False)


async def _edit_routes(app: BottleConsole, info: BottleInfo) -> None:
    home = ops.bottle_home(info, app.home)
    try:
        state, before = await asyncio.to_thread(ops.read_policy, home, info.slug)
    except BottleError as exc:
        app.notify(inert(str(exc)).plain, title="Routes", severity="error", markup=False)
        return

    def validate(text: str) -> str:
        ops.check_policy(text, state)
        return text

    body = await app.push_screen_wait(
        EditorScreen(f"routes.yaml of {info.slug} (validated on save, applied live)", before, validate)
    )
    if body is None or body == before:
        return
    try:
        warning = await ops.save_policy(home, state.slug, before, body, by=ops.operator("console"))
    except BottleError as exc:
        app.notify(inert(str(exc)).plain, title="Routes", severity="error", markup=False)
        return
    app.notify(
        inert(warning or f"routes.yaml of {state.slug} saved and reloaded").plain,
        title="Routes",
        severity="warning" if warning else "information",
        markup=False,
    )
