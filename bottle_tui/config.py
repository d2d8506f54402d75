"""The operator's settings in ``$CLAUDE_BOTTLE_HOME/config.yaml`` (all optional), validated into a
frozen dataclass. A bad file is a one-line error naming the file and the key."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bottle_contract.usage import Budget, Price, budget_problem, parse_budget, parse_price, price_problem

from .errors import BottleError

CONFIG_NAME = "config.yaml"
TOP_KEYS = ("archive", "keymap", "theme", "prices", "budget")
ARCHIVE_KEYS = ("max_age_days", "max_total_mb")


@dataclass(frozen=True)
class ArchiveSettings:
    """How long stopped bottles' logs, transcripts and egress decisions are kept in ``archive/``."""

    max_age_days: float = 30.0
    max_total_mb: float = 2048.0


@dataclass(frozen=True)
class Config:
    archive: ArchiveSettings = ArchiveSettings()
    # The console's binding id -> key(s), e.g. {"approve": "A", "stop": "X,delete"}; the console
    # checks the ids against its own bindings (config.py does not know them).
    keymap: tuple[tuple[str, str], ...] = ()
    theme: str | None = None  # a name from the top-level themes package (or a Textual built-in)
    # Model prices (USD per million tokens) over the shipped table (bottle_contract.usage), by model.
    prices: tuple[tuple[str, Price], ...] = ()
    budget: Budget | None = None  # the budget of a bottle whose manifest sets none


def config_path(home: Path) -> Path:
    return home / CONFIG_NAME


def _number(path: Path, key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise BottleError(f"{path}: {key}: expected a number >= 0, got {value!r}; e.g. {key.rsplit('.', 1)[-1]}: 30")
    return float(value)


def _known(path: Path, key: str, mapping: object, allowed: tuple[str, ...]) -> dict[Any, Any]:
    if not isinstance(mapping, dict):
        raise BottleError(f"{path}: {key or 'top level'}: expected a mapping of {', '.join(allowed)}")
    for name in mapping:
        if name not in allowed:
            full = f"{key}.{name}" if key else str(name)
            raise BottleError(f"{path}: {full}: unknown key; use one of: {', '.join(allowed)}")
    return mapping


def load_config(home: Path) -> Config:
    path = config_path(home)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Config()
    except (OSError, UnicodeDecodeError) as exc:
        raise BottleError(
            f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}; fix or remove the file"
        ) from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise BottleError(
            f"{path}: invalid YAML{where}: {getattr(exc, 'problem', None) or exc}; fix the file"
        ) from None
    if doc is None:
        return Config()
    doc = _known(path, "", doc, TOP_KEYS)
    archive = ArchiveSettings()
    if doc.get("archive") is not None:
        raw = _known(path, "archive", doc["archive"], ARCHIVE_KEYS)
        archive = ArchiveSettings(
            max_age_days=_number(path, "archive.max_age_days", raw.get("max_age_days", archive.max_age_days)),
            max_total_mb=_number(path, "archive.max_total_mb", raw.get("max_total_mb", archive.max_total_mb)),
        )
    keymap: tuple[tuple[str, str], ...] = ()
    if doc.get("keymap") is not None:
        raw_map = doc["keymap"]
        if not isinstance(raw_map, dict):
            raise BottleError(f"{path}: keymap: expected a mapping of binding id to key, e.g. keymap: {{approve: A}}")
        for name, key in raw_map.items():
            if not isinstance(name, str) or not isinstance(key, str) or not key.strip():
                raise BottleError(f"{path}: keymap.{name}: expected a key name, e.g. {name}: ctrl+a")
        keymap = tuple((str(k), str(v).strip()) for k, v in raw_map.items())
    theme = doc.get("theme")
    if theme is not None and (not isinstance(theme, str) or not theme.strip()):
        raise BottleError(f"{path}: theme: expected a theme name, e.g. theme: bottle-light")
    prices: list[tuple[str, Price]] = []
    if doc.get("prices") is not None:
        raw_prices = doc["prices"]
        if not isinstance(raw_prices, dict):
            raise BottleError(
                f"{path}: prices: expected a mapping of model name to prices, e.g. prices: {{claude-x: {{input: 3, output: 15, cache_write_5m: 3.75, cache_write_1h: 6, cache_read: 0.3}}}}"
            )
        for model, row in raw_prices.items():
            problem = price_problem(row)
            if not isinstance(model, str) or not model.strip():
                raise BottleError(f"{path}: prices: {model!r} is not a model name")
            if problem is not None:
                raise BottleError(f"{path}: prices.{model}: {problem}")
            prices.append((model.strip(), parse_price(row)))
    budget = None
    if doc.get("budget") is not None:
        problem = budget_problem(doc["budget"])
        if problem is not None:
            raise BottleError(f"{path}: budget: {problem}")
        budget = parse_budget(doc["budget"])
    return Config(
        archive=archive,
        keymap=keymap,
        theme=theme.strip() if theme else None,
        prices=tuple(prices),
        budget=budget,
    )
