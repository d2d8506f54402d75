"""What bottles spent on model calls, as egress counted it (usage.json, ``bottle_contract.usage``):
read for running, kept and archived bottles, and put in the few words the console and the CLI
show. Reads files only; the numbers are egress's, never recomputed here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bottle_contract import layout

from .state import StateDir, all_state_dirs, archive_dir, archive_root

PRICE_UNKNOWN = "price unknown"


@dataclass(frozen=True)
class BottleUsage:
    """One bottle's usage.json: ``where`` is running (its state folder is live), kept (stopped
    with --keep) or archived (stopped: the copy in archive/<slug>/)."""

    slug: str
    where: str
    doc: dict[str, Any]
    path: Path

    @property
    def totals(self) -> dict[str, Any]:
        totals: dict[str, Any] = self.doc.get("totals") or {}
        return totals

    @property
    def budget(self) -> dict[str, Any] | None:
        budget = self.doc.get("budget")
        return budget if isinstance(budget, dict) else None

    def to_json(self) -> dict[str, Any]:
        return {"slug": self.slug, "where": self.where, **self.doc}


# bottle_contract.usage is imported where it is used: the console's first frame shows no spend yet.


def tokens_of(counts: dict[str, Any]) -> int:
    from bottle_contract.usage import TOKEN_KEYS

    return sum(int(counts.get(k) or 0) for k in TOKEN_KEYS)


def read_state(state: StateDir) -> BottleUsage | None:
    from bottle_contract.usage import read_usage

    doc = read_usage(state.usage)
    if doc is None:
        return None
    return BottleUsage(state.slug, "kept" if state.preserved else "running", doc, state.usage)


class UsageReader:
    """``read_state`` that reads a usage.json again only when it changed (by its inode, mtime and
    size): a refresh of many bottles costs a stat each for those whose spend did not move."""

    def __init__(self) -> None:
        self._seen: dict[Path, tuple[tuple[int, int, int, bool], BottleUsage | None]] = {}

    def read(self, state: StateDir) -> BottleUsage | None:
        try:
            st = state.usage.stat()
        except OSError:
            self._seen.pop(state.usage, None)
            return None
        sig = (st.st_ino, st.st_mtime_ns, st.st_size, state.preserved)
        cached = self._seen.get(state.usage)
        if cached is not None and cached[0] == sig:
            return cached[1]
        found = read_state(state)
        self._seen[state.usage] = (sig, found)
        return found

    def forget(self, keep: set[Path]) -> None:
        """Drop what is cached for files not in ``keep`` (bottles gone)."""
        self._seen = {p: v for p, v in self._seen.items() if p in keep}


def read_archived(home: Path, slug: str) -> BottleUsage | None:
    from bottle_contract.usage import read_usage

    path = archive_dir(home, slug) / layout.EGRESS / layout.USAGE
    doc = read_usage(path)
    return BottleUsage(slug, "archived", doc, path) if doc is not None else None


def all_usage(home: Path) -> list[BottleUsage]:
    """Every bottle of ``home`` with a usage.json: live state folders first, then the archive
    (a bottle with both is shown from its state folder)."""
    found = [u for s in all_state_dirs(home) if (u := read_state(s)) is not None]
    seen = {u.slug for u in found}
    root = archive_root(home)
    if root.is_dir():
        for folder in sorted(root.iterdir()):
            if folder.is_dir() and folder.name not in seen and not folder.name.startswith("."):
                u = read_archived(home, folder.name)
                if u is not None:
                    found.append(u)
    return found


# --- in a few words ---------------------------------------------------------------------------------


def tokens_text(n: int) -> str:
    """1234 -> '1.2k', 5_600_000 -> '5.6M'."""
    for size, unit in ((1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def usd_text(usd: object) -> str:
    if not isinstance(usd, (int, float)) or isinstance(usd, bool):
        return PRICE_UNKNOWN
    return f"${usd:,.2f}" if usd >= 0.01 or usd == 0 else f"${usd:.4f}"


def cost_text(totals: dict[str, Any]) -> str:
    """The cost of ``totals``: dollars, with "+ price unknown" when some model has no price."""
    text = usd_text(totals.get("usd"))
    unpriced = totals.get("unpriced_models") or []
    if unpriced and not totals.get("usd"):
        return PRICE_UNKNOWN  # nothing it used has a price
    if unpriced and text != PRICE_UNKNOWN:
        text += f" + {PRICE_UNKNOWN}"
    return text


def budget_text(budget: dict[str, Any] | None) -> str:
    """'of $20.00 (warn)', '' without a budget."""
    if not budget:
        return ""
    limits = []
    if isinstance(budget.get("usd"), (int, float)):
        limits.append(f"${budget['usd']:,.2f}")
    if isinstance(budget.get("tokens"), int):
        limits.append(f"{tokens_text(budget['tokens'])} tok")
    level = budget.get("level")
    return f"of {' / '.join(limits)}" + (f" ({level})" if level in ("warn", "reached") else "")


def spend_cell(u: BottleUsage | None) -> str:
    """The agents pane's SPEND cell: '17k tok · $0.03', with the budget when one is set."""
    if u is None:
        return "-"
    t = u.totals
    text = f"{tokens_text(tokens_of(t))} tok · {cost_text(t)}"
    budget = budget_text(u.budget)
    return f"{text} {budget}" if budget else text
