"""The operator's settings in ``$CLAUDE_BOTTLE_HOME/config.yaml`` (all optional), validated into a
frozen dataclass. A bad file is a one-line error naming the file and the key."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import BottleError

if TYPE_CHECKING:
    from bottle_contract.usage import Budget, Price

CONFIG_NAME = "config.yaml"
TOP_KEYS = ("archive", "images", "keymap", "notify", "swarm", "theme", "prices", "budget", "pool")
POOL_KEYS = ("size",)
ARCHIVE_KEYS = ("max_age_days", "max_total_mb")
IMAGES_KEYS = ("registry",)
SWARM_KEYS = ("context", "nodes")
# A Docker context's name (what `docker context create` accepts) and a registry's host[:port][/path].
_CONTEXT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_REGISTRY = re.compile(r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[a-z0-9._/-]+)?$")
NOTIFY_KEYS = ("events", "terminal", "command", "command_timeout", "webhooks", "coalesce_seconds", "max_per_minute")
NOTIFY_EVENTS = ("proposal", "waiting", "budget", "died")
TERMINAL_MODES = ("osc9", "osc777", "both")
WEBHOOK_KEYS = ("url_env", "format")
WEBHOOK_FORMATS = ("json", "slack", "ntfy")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class ArchiveSettings:
    """How long stopped bottles' logs, transcripts and egress decisions are kept in ``archive/``."""

    max_age_days: float = 30.0
    max_total_mb: float = 2048.0


@dataclass(frozen=True)
class Webhook:
    """A webhook: its URL is a secret, so the file names the environment variable that holds it."""

    url_env: str
    format: str = "json"  # one of WEBHOOK_FORMATS


@dataclass(frozen=True)
class NotifySettings:
    """Where the console's alerts also go (notify.py sends them); nothing is on by default."""

    events: tuple[str, ...] = NOTIFY_EVENTS
    terminal: str | None = None  # one of TERMINAL_MODES: a desktop notification through the terminal
    command: tuple[str, ...] = ()  # argv, given each message as JSON on stdin
    command_timeout: float = 10.0
    webhooks: tuple[Webhook, ...] = ()
    coalesce_seconds: float = 3.0  # a burst within this window is one message
    max_per_minute: float = 6.0  # messages per minute at most (a burst beyond waits and is coalesced)

    @property
    def enabled(self) -> bool:
        return bool(self.terminal or self.command or self.webhooks)


@dataclass(frozen=True)
class SwarmSettings:
    """Where ``backend: swarm`` bottles run: the Docker context of a swarm manager, and each
    node's own context (for `docker exec`), by the node's hostname. A node not named here is
    reached through the context ``<context>-<hostname>``, else the context called ``<hostname>``."""

    context: str
    nodes: tuple[tuple[str, str], ...] = ()

    def node_contexts(self, hostname: str) -> tuple[str, ...]:
        """The contexts to try for the node ``hostname``, in order."""
        named = dict(self.nodes).get(hostname)
        if named:
            return (named,)
        return (f"{self.context}-{hostname}", hostname)


@dataclass(frozen=True)
class Config:
    archive: ArchiveSettings = ArchiveSettings()
    notify: NotifySettings = NotifySettings()
    # An operator's image registry (`bottle-tui images push REGISTRY` fills it): swarm nodes pull
    # the bottle images from there. None: the images must be on every node already.
    registry: str | None = None
    swarm: SwarmSettings | None = None
    # The console's binding id -> key(s), e.g. {"approve": "A", "stop": "X,delete"}; the console
    # checks the ids against its own bindings (config.py does not know them).
    keymap: tuple[tuple[str, str], ...] = ()
    theme: str | None = None  # a name from the top-level themes package (or a Textual built-in)
    # Model prices (USD per million tokens) over the shipped table (bottle_contract.usage), by model.
    prices: tuple[tuple[str, Price], ...] = ()
    budget: Budget | None = None  # the budget of a bottle whose manifest sets none
    # Warm bottles kept for each docker bottle without git whose manifest sets no pool of its own.
    pool_size: int = 0


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
    # Only when there is a file: the console's first frame in a home without one goes without these.
    import yaml

    from bottle_contract.usage import budget_problem, parse_budget, parse_price, price_problem

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
    registry: str | None = None
    if doc.get("images") is not None:
        raw_images = _known(path, "images", doc["images"], IMAGES_KEYS)
        value = raw_images.get("registry")
        if value is not None and (not isinstance(value, str) or not _REGISTRY.match(value.strip())):
            raise BottleError(
                f"{path}: images.registry: expected a registry as host[:port], e.g. registry: registry.internal:5000"
            )
        registry = value.strip() if value else None
    swarm = _swarm(path, doc.get("swarm"))
    theme = doc.get("theme")
    if theme is not None and (not isinstance(theme, str) or not theme.strip()):
        raise BottleError(f"{path}: theme: expected a theme name, e.g. theme: bottle-light")
    notify = _notify(path, doc["notify"]) if doc.get("notify") is not None else NotifySettings()
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
    pool_size = 0
    if doc.get("pool") is not None:
        from .manifest import POOL_MAX  # the manifests' own bound (not loaded for a config without pool:)

        raw_pool = _known(path, "pool", doc["pool"], POOL_KEYS)
        size = raw_pool.get("size", 0)
        if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= POOL_MAX:
            raise BottleError(
                f"{path}: pool.size: expected a whole number from 0 to {POOL_MAX}, got {size!r}; e.g. pool: {{size: 2}}"
            )
        pool_size = size
    return Config(
        archive=archive,
        pool_size=pool_size,
        registry=registry,
        swarm=swarm,
        keymap=keymap,
        notify=notify,
        theme=theme.strip() if theme else None,
        prices=tuple(prices),
        budget=budget,
    )


def _positive(path: Path, key: str, value: object, example: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise BottleError(f"{path}: {key}: expected a number > 0, got {value!r}; e.g. {example}")
    return float(value)


def _notify(path: Path, raw: object) -> NotifySettings:
    doc = _known(path, "notify", raw, NOTIFY_KEYS)
    default = NotifySettings()
    events = doc.get("events", list(default.events))
    if not isinstance(events, list) or not events or any(e not in NOTIFY_EVENTS for e in events):
        raise BottleError(
            f"{path}: notify.events: expected a list of {', '.join(NOTIFY_EVENTS)}; e.g. events: [proposal, budget]"
        )
    terminal = doc.get("terminal", False)
    if terminal is True:
        terminal = "both"
    if terminal is not False and terminal is not None and terminal not in TERMINAL_MODES:
        raise BottleError(
            f"{path}: notify.terminal: expected true, false or one of {', '.join(TERMINAL_MODES)}; e.g. terminal: osc9"
        )
    command = doc.get("command") or []
    if not isinstance(command, list) or any(not isinstance(a, str) or not a for a in command):
        raise BottleError(f"{path}: notify.command: expected an argv list, e.g. command: [notify-send, bottle-tui]")
    hooks = doc.get("webhooks") or []
    if not isinstance(hooks, list):
        raise BottleError(
            f"{path}: notify.webhooks: expected a list, e.g. webhooks: [{{url_env: SLACK_WEBHOOK_URL, format: slack}}]"
        )
    webhooks = []
    for i, hook in enumerate(hooks):
        key = f"notify.webhooks[{i}]"
        if isinstance(hook, dict) and "url" in hook:
            raise BottleError(
                f"{path}: {key}.url: a webhook URL is a secret: put it in an environment variable and name it with url_env"
            )
        hook = _known(path, key, hook, WEBHOOK_KEYS)
        env = hook.get("url_env")
        if not isinstance(env, str) or not ENV_NAME.fullmatch(env):
            raise BottleError(
                f"{path}: {key}.url_env: expected the name of an environment variable, e.g. url_env: SLACK_WEBHOOK_URL"
            )
        fmt = hook.get("format", "json")
        if fmt not in WEBHOOK_FORMATS:
            raise BottleError(f"{path}: {key}.format: expected one of {', '.join(WEBHOOK_FORMATS)}, got {fmt!r}")
        webhooks.append(Webhook(env, fmt))
    return NotifySettings(
        events=tuple(dict.fromkeys(events)),
        terminal=terminal or None,
        command=tuple(command),
        command_timeout=_positive(
            path, "notify.command_timeout", doc.get("command_timeout", default.command_timeout), "command_timeout: 10"
        ),
        webhooks=tuple(webhooks),
        coalesce_seconds=_number(
            path, "notify.coalesce_seconds", doc.get("coalesce_seconds", default.coalesce_seconds)
        ),
        max_per_minute=_positive(
            path, "notify.max_per_minute", doc.get("max_per_minute", default.max_per_minute), "max_per_minute: 6"
        ),
    )


def _context(path: Path, key: str, value: object) -> str:
    if not isinstance(value, str) or not _CONTEXT_NAME.match(value.strip()):
        raise BottleError(
            f"{path}: {key}: expected a Docker context name (`docker context ls` lists them), e.g. context: prod-swarm"
        )
    return value.strip()


def _swarm(path: Path, raw: object) -> SwarmSettings | None:
    if raw is None:
        return None
    raw = _known(path, "swarm", raw, SWARM_KEYS)
    if raw.get("context") is None:
        raise BottleError(
            f"{path}: swarm.context: missing; name the swarm manager's Docker context, e.g. context: prod-swarm"
        )
    nodes = raw.get("nodes") or {}
    if not isinstance(nodes, dict):
        raise BottleError(f"{path}: swarm.nodes: expected a mapping of node hostname to Docker context")
    return SwarmSettings(
        context=_context(path, "swarm.context", raw["context"]),
        nodes=tuple((str(host), _context(path, f"swarm.nodes.{host}", ctx)) for host, ctx in nodes.items()),
    )
