"""What a bottle spends on model calls: the metering settings the host writes for egress
(metering.json: which hosts are metered, the price table, the budget) and the usage egress writes
back (usage.json: tokens, requests, errors and cost per model, the budget's level). Stdlib only;
both sides read and write these files through this module.

metering.json (host -> egress; every key required, egress has no defaults of its own)::

    {"schema": 1, "slug": "<bottle slug>",
     "metered": [{"host": "api.anthropic.com", "api": "anthropic"}],
     "prices": {"<model>": {"input": 3.0, "output": 15.0, "cache_write_5m": 3.75,
                            "cache_write_1h": 6.0, "cache_read": 0.3}},     # USD per million tokens
     "prices_date": "2025-11-24",
     "budget": null | {"usd": 10.0 | null, "tokens": 5000000 | null}}

usage.json (egress -> host, the notify helper reads ``budget.level``)::

    {"schema": 1, "slug": "...", "updated": <unix seconds>,
     "models": {"<model>": {"input_tokens": N, "output_tokens": N, "cache_creation_input_tokens": N,
                            "cache_read_input_tokens": N, "cache_creation_1h_input_tokens": N,
                            "requests": N, "errors": N, "usd": <float | null: price unknown>}},
     "totals": {same counters, "usd": <float: the priced models>, "unpriced_models": [...]},
     "unread": N,          # metered responses whose usage could not be read (an unknown coding)
     "budget": null | {"usd", "tokens", "level": "ok" | "warn" | "reached", "spent_usd", "spent_tokens"}}

A model's price is found by its exact name, or by a name that is a table key plus a ``-YYYYMMDD``
date (``claude-sonnet-4-5-20250929`` under ``claude-sonnet-4-5``); nothing else is matched, so a
model of no known price is counted in tokens and shown as "price unknown", never guessed.
Spent tokens, for a token budget, are all four token counts (input, output, cache creation, cache
read). The level is ``warn`` at 80% of either limit and ``reached`` at 100% of either.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .files import atomic_write

SCHEMA = 1
APIS = ("anthropic",)  # how a metered host's usage is read: the Messages API's `usage`
TOKEN_KEYS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
# Part of cache_creation_input_tokens written with the 1-hour lifetime (priced apart).
CACHE_1H = "cache_creation_1h_input_tokens"
COUNT_KEYS = (*TOKEN_KEYS, CACHE_1H, "requests", "errors")
PRICE_KEYS = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")
LEVELS = ("ok", "warn", "reached")
WARN_AT = 0.8
METERING_KEYS = ("schema", "slug", "metered", "prices", "prices_date", "budget")
BUDGET_KEYS = ("usd", "tokens")
MAX_PRICE = 1e6  # USD per million tokens: anything above is a typo
_DATED = re.compile(r"^(?P<base>.+)-(?P<date>20\d{6})$")

# The shipped price table, USD per million tokens: base input, output, 5-minute and 1-hour cache
# writes, cache hits. Taken on PRICES_DATE from stored copies of Anthropic's published pages
# (platform.claude.com/docs/en/about-claude/pricing, "Model pricing", and each model's overview
# page, e.g. .../models/opus-5-5/overview), not fetched at run time: config.yaml `prices` replaces
# or adds rows. Rows follow the pages' rates; where a page gives only input and output, the
# standard cache multipliers apply (writes 1.25x and 2x input, hits 0.1x). Left out, so shown as
# "price unknown": Claude Haiku 5.5, whose price depends on each request's prompt length (over
# 100K tokens it costs 5x), which a per-model table cannot say. Long-context surcharges of older
# models, batch and fast-mode rates are not modelled.
PRICES_DATE = "2026-12-04"
PRICES_SOURCE = "Anthropic's published API prices (platform.claude.com/docs/en/about-claude/pricing)"


def _row(inp: float, out: float, *, hit: float | None = None) -> dict[str, float]:
    """A model's prices from its input and output rates: cache writes 1.25x and 2x input, hits
    0.1x input unless the page says otherwise (``hit``)."""
    return {
        "input": inp,
        "output": out,
        "cache_write_5m": round(inp * 1.25, 6),
        "cache_write_1h": round(inp * 2, 6),
        "cache_read": round(inp * 0.1, 6) if hit is None else hit,
    }


DEFAULT_PRICES: dict[str, dict[str, float]] = {
    "claude-fable-5-1": _row(10.0, 50.0, hit=0.25),
    "claude-fable-5": _row(10.0, 50.0, hit=1.0),
    "claude-opus-5-5": _row(4.0, 20.0, hit=0.2),
    "claude-opus-5": _row(5.0, 25.0),
    "claude-sonnet-5-5": _row(2.0, 10.0, hit=0.1),
    "claude-sonnet-5": _row(2.0, 10.0),
    "claude-opus-4-8": _row(5.0, 25.0),
    "claude-opus-4-7": _row(5.0, 25.0),
    "claude-opus-4-6": _row(5.0, 25.0),
    "claude-opus-4-5": _row(5.0, 25.0),
    "claude-opus-4-1": _row(15.0, 75.0),
    "claude-opus-4-0": _row(15.0, 75.0),
    "claude-opus-4": _row(15.0, 75.0),
    "claude-sonnet-4-6": _row(3.0, 15.0),
    "claude-sonnet-4-5": _row(3.0, 15.0),
    "claude-sonnet-4-0": _row(3.0, 15.0),
    "claude-sonnet-4": _row(3.0, 15.0),
    "claude-3-7-sonnet": _row(3.0, 15.0),
    "claude-haiku-4-5": _row(1.0, 5.0),
    "claude-3-5-haiku": {**_row(0.8, 4.0), "cache_write_5m": 1.0, "cache_write_1h": 1.6, "cache_read": 0.08},
    "claude-3-haiku": {**_row(0.25, 1.25), "cache_write_5m": 0.3, "cache_write_1h": 0.5, "cache_read": 0.03},
    "claude-3-opus": _row(15.0, 75.0),
}


class UsageError(ValueError):
    """A bad metering.json: ``<source>: <key>: <problem>`` on one line."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{key}: {problem}" if key else f"{where}{problem}")


# --- prices and budgets ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Price:
    """USD per million tokens of one model."""

    input: float
    output: float
    cache_write_5m: float
    cache_write_1h: float
    cache_read: float

    def to_doc(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in PRICE_KEYS}

    def cost(self, counts: Mapping[str, int]) -> float:
        """What ``counts`` (COUNT_KEYS) cost, in USD."""
        one_hour = min(counts.get(CACHE_1H, 0), counts.get("cache_creation_input_tokens", 0))
        five_min = counts.get("cache_creation_input_tokens", 0) - one_hour
        return (
            counts.get("input_tokens", 0) * self.input
            + counts.get("output_tokens", 0) * self.output
            + five_min * self.cache_write_5m
            + one_hour * self.cache_write_1h
            + counts.get("cache_read_input_tokens", 0) * self.cache_read
        ) / 1e6


def price_problem(value: object) -> str | None:
    """Why ``value`` is not a model's prices (a mapping of PRICE_KEYS to numbers >= 0), else None."""
    if not isinstance(value, dict):
        return f"must be a mapping of {', '.join(PRICE_KEYS)} (USD per million tokens)"
    unknown = sorted(set(map(str, value)) - set(PRICE_KEYS))
    if unknown:
        return f"unknown key {unknown[0]!r}; a price has {', '.join(PRICE_KEYS)}"
    for k in PRICE_KEYS:
        v = value.get(k)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0 <= v <= MAX_PRICE) or math.isnan(v):
            return f"{k}: must be a number of USD per million tokens (>= 0), e.g. {k}: 3.0"
    return None


def parse_price(value: dict[str, Any]) -> Price:
    return Price(**{k: float(value[k]) for k in PRICE_KEYS})


def price_of(prices: Mapping[str, Price], model: str) -> Price | None:
    """The price of ``model``: its exact row, or the row of its name without a ``-YYYYMMDD`` date."""
    found = prices.get(model)
    if found is not None:
        return found
    m = _DATED.match(model)
    return prices.get(m.group("base")) if m else None


@dataclass(frozen=True)
class Budget:
    """A bottle's limits on what it spends in all (None: no such limit)."""

    usd: float | None = None
    tokens: int | None = None

    def to_doc(self) -> dict[str, Any]:
        return {"usd": self.usd, "tokens": self.tokens}

    def level(self, spent_usd: float, spent_tokens: int) -> str:
        share = max(
            spent_usd / self.usd if self.usd else (math.inf if self.usd == 0 else 0.0),
            spent_tokens / self.tokens if self.tokens else (math.inf if self.tokens == 0 else 0.0),
        )
        return "reached" if share >= 1 else "warn" if share >= WARN_AT else "ok"

    def describe(self) -> str:
        parts = ([f"${self.usd:,.2f}"] if self.usd is not None else []) + (
            [f"{self.tokens:,} tokens"] if self.tokens is not None else []
        )
        return " and ".join(parts) or "no limit"


def budget_problem(value: object) -> str | None:
    """Why ``value`` is not a budget ({usd, tokens}, each a number >= 0 or null, one set), else None."""
    if not isinstance(value, dict):
        return "must be a mapping such as {usd: 10} or {tokens: 5000000}"
    unknown = sorted(set(map(str, value)) - set(BUDGET_KEYS))
    if unknown:
        return f"unknown key {unknown[0]!r}; a budget has usd and tokens"
    usd, tokens = value.get("usd"), value.get("tokens")
    if usd is not None and (isinstance(usd, bool) or not isinstance(usd, (int, float)) or not 0 <= usd < 1e12):
        return "usd: must be an amount of US dollars (>= 0), e.g. usd: 10"
    if tokens is not None and (isinstance(tokens, bool) or not isinstance(tokens, int) or not 0 <= tokens < 10**15):
        return "tokens: must be a whole number of tokens (>= 0), e.g. tokens: 5000000"
    if usd is None and tokens is None:
        return "set usd, tokens or both, e.g. {usd: 10}"
    return None


def parse_budget(value: dict[str, Any]) -> Budget:
    usd = value.get("usd")
    return Budget(usd=float(usd) if usd is not None else None, tokens=value.get("tokens"))


# --- metering.json ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metered:
    host: str  # normalised host name: a request whose route's host is this one is metered
    api: str  # one of APIS


@dataclass(frozen=True)
class Metering:
    slug: str
    metered: tuple[Metered, ...] = ()
    prices: Mapping[str, Price] = field(default_factory=dict)
    prices_date: str = PRICES_DATE
    budget: Budget | None = None

    def api_of(self, host: str) -> str | None:
        return next((m.api for m in self.metered if m.host == host), None)

    def to_doc(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "slug": self.slug,
            "metered": [{"host": m.host, "api": m.api} for m in self.metered],
            "prices": {name: p.to_doc() for name, p in sorted(self.prices.items())},
            "prices_date": self.prices_date,
            "budget": self.budget.to_doc() if self.budget else None,
        }


def default_prices() -> dict[str, Price]:
    return {name: parse_price(row) for name, row in DEFAULT_PRICES.items()}


def parse_metering(doc: object, source: str = "metering.json") -> Metering:
    if not isinstance(doc, dict):
        raise UsageError(source, "", "expected a JSON object with keys " + ", ".join(METERING_KEYS))
    for k in METERING_KEYS:
        if k not in doc:
            raise UsageError(source, k, "missing: metering.json lists every key")
    unknown = sorted(set(map(str, doc)) - set(METERING_KEYS))
    if unknown:
        raise UsageError(source, unknown[0], "unknown key")
    if doc["schema"] != SCHEMA:
        raise UsageError(source, "schema", f"must be {SCHEMA}")
    if not isinstance(doc["slug"], str) or not doc["slug"]:
        raise UsageError(source, "slug", "must be the bottle's slug")
    metered = []
    if not isinstance(doc["metered"], list):
        raise UsageError(source, "metered", "must be a list of {host, api}")
    for i, m in enumerate(doc["metered"]):
        if not isinstance(m, dict) or set(m) != {"host", "api"} or not isinstance(m["host"], str) or not m["host"]:
            raise UsageError(source, f"metered[{i}]", "must be {host: <name>, api: anthropic}")
        if m["api"] not in APIS:
            raise UsageError(source, f"metered[{i}].api", f"must be one of {', '.join(APIS)}")
        metered.append(Metered(host=m["host"].lower().rstrip("."), api=m["api"]))
    if not isinstance(doc["prices"], dict):
        raise UsageError(source, "prices", "must map model names to prices")
    prices = {}
    for name, row in doc["prices"].items():
        if (problem := price_problem(row)) is not None:
            raise UsageError(source, f"prices.{str(name)[:80]}", problem)
        prices[str(name)] = parse_price(row)
    if not isinstance(doc["prices_date"], str):
        raise UsageError(source, "prices_date", "must be the date the prices were taken (YYYY-MM-DD)")
    budget = None
    if doc["budget"] is not None:
        if (problem := budget_problem(doc["budget"])) is not None:
            raise UsageError(source, "budget", problem)
        budget = parse_budget(doc["budget"])
    return Metering(
        slug=doc["slug"], metered=tuple(metered), prices=prices, prices_date=doc["prices_date"], budget=budget
    )


def load_metering(path: str | os.PathLike[str]) -> Metering:
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(os.fspath(path), "", f"cannot read: {getattr(e, 'strerror', None) or e}") from None
    except (ValueError, RecursionError):
        raise UsageError(os.fspath(path), "", "not valid JSON") from None
    return parse_metering(doc, os.fspath(path))


def write_metering(path: str | os.PathLike[str], metering: Metering) -> None:
    atomic_write(path, json.dumps(metering.to_doc(), indent=2) + "\n", mode=0o644)


# --- usage.json ------------------------------------------------------------------------------------


def zero() -> dict[str, int]:
    return dict.fromkeys(COUNT_KEYS, 0)


def spent_tokens(counts: Mapping[str, int]) -> int:
    return sum(int(counts.get(k, 0)) for k in TOKEN_KEYS)


@dataclass
class Ledger:
    """Per-model counters of one bottle (what egress keeps and writes as usage.json)."""

    models: dict[str, dict[str, int]] = field(default_factory=dict)
    unread: int = 0

    def counts(self, model: str) -> dict[str, int]:
        found = self.models.get(model)
        if found is None:
            found = self.models[model] = zero()
        return found

    def plus(self, other: Ledger) -> Ledger:
        """A new ledger of both ledgers' counts (egress's workers add theirs to usage.json's)."""
        out = Ledger(unread=self.unread + other.unread)
        for ledger in (self, other):
            for model, counts in ledger.models.items():
                c = out.counts(model)
                for k in COUNT_KEYS:
                    c[k] += counts.get(k, 0)
        return out

    def totals(self) -> dict[str, int]:
        out = zero()
        for counts in self.models.values():
            for k in COUNT_KEYS:
                out[k] += counts.get(k, 0)
        return out

    def spent(self, prices: Mapping[str, Price]) -> tuple[float, int, list[str]]:
        """(USD of the priced models, all tokens, the models of no known price)."""
        usd, unpriced = 0.0, []
        for model, counts in self.models.items():
            price = price_of(prices, model)
            if price is None:
                if spent_tokens(counts) or counts.get("requests"):
                    unpriced.append(model)
            else:
                usd += price.cost(counts)
        return usd, spent_tokens(self.totals()), sorted(unpriced)

    def to_doc(self, slug: str, prices: Mapping[str, Price], budget: Budget | None, now: float) -> dict[str, Any]:
        models = {}
        for model, counts in sorted(self.models.items()):
            price = price_of(prices, model)
            models[model] = {**counts, "usd": round(price.cost(counts), 6) if price else None}
        usd, tokens, unpriced = self.spent(prices)
        doc: dict[str, Any] = {
            "schema": SCHEMA,
            "slug": slug,
            "updated": round(now, 3),
            "models": models,
            "totals": {**self.totals(), "usd": round(usd, 6), "unpriced_models": unpriced},
            "unread": self.unread,
            "budget": None,
        }
        if budget is not None:
            doc["budget"] = {
                **budget.to_doc(),
                "level": budget.level(usd, tokens),
                "spent_usd": round(usd, 6),
                "spent_tokens": tokens,
            }
        return doc

    @classmethod
    def from_doc(cls, doc: object) -> Ledger:
        """The counters of a usage.json document (what egress resumes counting from); ValueError
        when it is not one."""
        if not isinstance(doc, dict) or doc.get("schema") != SCHEMA or not isinstance(doc.get("models"), dict):
            raise ValueError("not a usage.json document")
        ledger = cls()
        for model, counts in doc["models"].items():
            if not isinstance(counts, dict):
                raise ValueError(f"models.{model}: not a mapping")
            c = ledger.counts(str(model))
            for k in COUNT_KEYS:
                v = counts.get(k, 0)
                if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                    raise ValueError(f"models.{model}.{k}: not a count")
                c[k] = v
        unread = doc.get("unread", 0)
        ledger.unread = unread if isinstance(unread, int) and not isinstance(unread, bool) and unread >= 0 else 0
        return ledger


def write_usage(path: str | os.PathLike[str], doc: dict[str, Any]) -> None:
    atomic_write(path, json.dumps(doc, separators=(",", ":")) + "\n", mode=0o644)


def read_usage(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """usage.json as written (see the module docstring), or None when there is none or it is not one."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        return None
    if not isinstance(doc.get("models"), dict) or not isinstance(doc.get("totals"), dict):
        return None
    budget = doc.get("budget")
    if budget is not None and (not isinstance(budget, dict) or budget.get("level") not in LEVELS):
        return None
    return doc
