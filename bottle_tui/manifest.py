"""Load and validate agent and bottle manifests (YAML front matter + Markdown body) into frozen dataclasses.
Every problem is a one-line ManifestError naming the file, the dotted key path, what is wrong and what to do
(the reading and the checks themselves are front_matter's)."""

from __future__ import annotations

import difflib
import os
import re
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from bottle_contract.policy import Auth, DlpSettings, Route
from bottle_contract.usage import Budget, budget_problem, parse_budget

from .front_matter import (
    NAME_RE,
    Checker,
    ManifestError,
    item_key,
    kind_of,
    read_front_matter,
    shown,
    sub_key,
)
from .manifest_routes import ANTHROPIC_API, egress_workers, metered_hosts, parse_dlp, parse_routes
from .state import default_home as default_home  # the home's place: state.py's, also known here

__all__ = [
    "AgentSpec",
    "Auth",
    "Budget",
    "BottleSpec",
    "DlpSettings",
    "GitSpec",
    "ManifestError",
    "Manifests",
    "Resources",
    "Route",
    "SuperviseSpec",
    "default_home",
    "load_manifests",
    "parse_agent",
    "parse_bottle",
]

DEFAULTS_DIR = Path(__file__).parent / "defaults"
BACKENDS = ("docker", "smolvm", "swarm")

_BRANCH_RE = re.compile(r"^(?!-)(?!/)(?!.*\.\.)(?!.*//)[A-Za-z0-9._/-]+(?<![/.])$")
_BRANCH_GLOB_RE = re.compile(r"^(?!-)(?!/)(?!.*\.\.)(?!.*//)[A-Za-z0-9._/*?\[\]!-]+(?<![/.])$")
_SCP_RE = re.compile(r"^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:.+$")
_MEMORY_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([mg])(?:i?b)?$", re.IGNORECASE)

AGENT_KEYS = ("name", "bottle", "model", "claude_args", "description")
BOTTLE_KEYS = (
    "name",
    "description",
    "backend",
    "egress",
    "git",
    "supervise",
    "env",
    "dlp",
    "resources",
    "budget",
    "pool",
)
GIT_KEYS = ("upstream", "branch", "credentials_env", "protected", "review")
SUPERVISE_KEYS = ("enabled", "timeout_seconds")
RESOURCES_KEYS = ("cpus", "memory", "pids")
POOL_KEYS = ("size",)
# Warm bottles kept per bottle manifest: each one holds a running bundle and agent (memory, two networks).
POOL_MAX = 8


@dataclass(frozen=True)
class GitSpec:
    upstream: str
    branch: str
    credentials_env: str | None
    protected: tuple[str, ...] = ()  # branch names or globs the git gate refuses to push or delete
    # A repository on the operator's machine (git.upstream a path or file://), resolved: the host
    # mirrors it for the gate and brings approved pushes home; no container ever sees this path.
    local: Path | None = None
    review: bool = False  # pushes wait as git-push proposals (always so for a local upstream)


@dataclass(frozen=True)
class SuperviseSpec:
    enabled: bool = True
    timeout_seconds: int = 900


@dataclass(frozen=True)
class Resources:
    cpus: float = 2.0
    memory_mib: int = 4096
    pids: int = 1024


@dataclass(frozen=True)
class BottleSpec:
    name: str
    path: Path
    backend: str
    description: str
    routes: tuple[Route, ...]
    git: GitSpec | None
    supervise: SuperviseSpec
    env: tuple[tuple[str, str], ...]
    dlp: DlpSettings
    resources: Resources
    budget: Budget | None = None  # what the bottle may spend on model calls (None: config.yaml's default)
    metered: tuple[str, ...] = (ANTHROPIC_API,)  # hosts whose model calls egress meters
    egress_workers: int | str = "auto"  # egress processes sharing the proxy port (bottle_contract.workers)
    pool: int | None = None  # warm bottles kept started (`pool: {size: N}`; None: config.yaml's default)


@dataclass(frozen=True)
class AgentSpec:
    name: str
    path: Path
    bottle: str
    model: str | None
    claude_args: tuple[str, ...]
    description: str
    prompt: str


@dataclass(frozen=True)
class Manifests:
    home: Path
    agents: Mapping[str, AgentSpec] = field(hash=False)
    bottles: Mapping[str, BottleSpec] = field(hash=False)
    agents_from_defaults: bool


def _name(ck: Checker, fm: dict[Any, Any], path: Path, what: str) -> str:
    if fm.get("name") is not None:
        return ck.expect_name("name", fm["name"], what)
    if not NAME_RE.match(path.stem):
        ck.fail(
            "name",
            f"file name '{shown(path.stem)}' is not a valid {what} name; rename the file or set name: "
            "(1-31 lowercase letters, digits and '-', starting with a letter or digit)",
        )
    return path.stem


def _description(ck: Checker, fm: dict[Any, Any]) -> str:
    text = ck.optional(fm, "", "description", lambda k, v: ck.expect_str(k, v, allow_empty=True), "")
    return " ".join(text.split())


# --- agents -------------------------------------------------------------------------------------


def parse_agent(path: Path, text: str) -> AgentSpec:
    """Validate one agents/<name>.md; the body (stripped) becomes the appended system prompt."""
    ck = Checker(path)
    fm, body = read_front_matter(ck, text)
    ck.known_keys("", fm, AGENT_KEYS)
    name = _name(ck, fm, path, "agent")
    bottle = ck.expect_name(
        "bottle", ck.required("", fm, "bottle", "say which bottle this agent runs in, e.g. bottle: dev"), "bottle"
    )
    model = ck.optional(fm, "", "model", lambda k, v: ck.expect_str(k, v, "model: sonnet"), None)
    args: list[str] = ck.optional(
        fm, "", "claude_args", lambda k, v: ck.expect_str_list(k, v, "claude_args: [--verbose]"), []
    )
    return AgentSpec(
        name=name,
        path=path,
        bottle=bottle,
        model=model,
        claude_args=tuple(args),
        description=_description(ck, fm),
        prompt=body.strip(),
    )


# --- bottles ------------------------------------------------------------------------------------


def local_upstream(upstream: str, manifest_dir: Path) -> Path | None:
    """The operator's repository that ``upstream`` names (a path: absolute, ``~/...``, relative to
    the manifest's folder, or ``file://``), made absolute; None for a remote URL."""
    if upstream.startswith("file://"):
        raw = urllib.parse.unquote(urllib.parse.urlsplit(upstream).path)
    elif "://" in upstream or _SCP_RE.match(upstream):
        return None
    else:
        raw = upstream
    path = Path(raw).expanduser()
    return Path(os.path.normpath(path if path.is_absolute() else manifest_dir / path))


def _upstream(ck: Checker, key: str, value: object) -> str:
    upstream = ck.expect_str(key, value, "https://git.example.com/team/repo.git")
    forms = "use https://host/owner/repo.git or a path to a repository on this machine (~/code/app, ../app, file:///srv/app)"
    if "://" in upstream:
        try:
            parts = urllib.parse.urlsplit(upstream)
            hostname = parts.hostname
        except ValueError as exc:
            ck.fail(key, f"'{shown(upstream)}' is not a valid URL ({exc}); {forms}")
        if parts.scheme not in ("https", "ssh", "file"):
            ck.fail(key, f"'{shown(upstream.split('://')[0])}://' upstreams are not supported; {forms}")
        if parts.password or (parts.scheme == "https" and parts.username):
            ck.fail(key, "credentials are written in the URL; remove them and name an env var in git.credentials_env")
        if parts.scheme != "file" and not hostname:
            ck.fail(key, f"'{shown(upstream)}' has no host; {forms}")
    elif not upstream.strip() or any(ord(ch) < 32 for ch in upstream):
        ck.fail(key, f"'{shown(upstream)}' is not a git upstream; {forms}")
    return upstream


def _branch(ck: Checker, key: str, value: object) -> str:
    branch = ck.expect_str(key, value, "main")
    if not _BRANCH_RE.match(branch):
        ck.fail(
            key, f"'{shown(branch)}' is not a valid branch name; use letters, digits, '.', '_', '-' and '/', e.g. main"
        )
    return branch


def _protected(ck: Checker, key: str, value: object) -> tuple[str, ...]:
    items = ck.expect_str_list(key, value, 'protected: [main, "release/*"]')
    for i, item in enumerate(items):
        if item.startswith("refs/"):
            ck.fail(
                item_key(key, i),
                f"'{shown(item)}' is a ref; write the branch name only, e.g. {item.removeprefix('refs/heads/') or 'main'}",
            )
        if not _BRANCH_GLOB_RE.match(item):
            ck.fail(
                item_key(key, i),
                f"'{shown(item)}' is not a branch name or glob; use letters, digits, '.', '_', '-', '/' and * ? [ ], e.g. 'release/*'",
            )
    return tuple(dict.fromkeys(items))


def _git(ck: Checker, key: str, value: object) -> GitSpec:
    git = ck.expect_mapping(key, value, "git: {upstream: https://git.example.com/team/repo.git}")
    ck.known_keys(key, git, GIT_KEYS)
    upstream = _upstream(
        ck,
        sub_key(key, "upstream"),
        ck.required(key, git, "upstream", "write e.g. upstream: https://git.example.com/team/repo.git"),
    )
    return GitSpec(
        upstream=upstream,
        branch=ck.optional(git, key, "branch", lambda k, v: _branch(ck, k, v), "main"),
        credentials_env=ck.optional(
            git, key, "credentials_env", lambda k, v: ck.expect_env_name(k, v, "GIT_TOKEN"), None
        ),
        protected=ck.optional(git, key, "protected", lambda k, v: _protected(ck, k, v), ()),
        local=local_upstream(upstream, ck.path.parent),
        review=ck.optional(git, key, "review", lambda k, v: ck.expect_bool(k, v, "review: true"), False),
    )


def _supervise(ck: Checker, key: str, value: object) -> SuperviseSpec:
    spec = ck.expect_mapping(key, value, "supervise: {enabled: false}")
    ck.known_keys(key, spec, SUPERVISE_KEYS)
    return SuperviseSpec(
        enabled=ck.optional(spec, key, "enabled", lambda k, v: ck.expect_bool(k, v, "enabled: true"), True),
        timeout_seconds=ck.optional(
            spec, key, "timeout_seconds", lambda k, v: ck.expect_int(k, v, "timeout_seconds: 900"), 900
        ),
    )


def _env(ck: Checker, key: str, value: object) -> tuple[tuple[str, str], ...]:
    env = ck.expect_mapping(key, value, "env: {LOG_LEVEL: debug}")
    pairs = []
    for name, item in env.items():
        item_key = sub_key(key, str(name))
        if not isinstance(name, str):
            ck.fail(
                item_key,
                f"'{shown(name)}' is not an environment variable name; quote it or use letters, digits and '_'",
            )
        ck.expect_env_name(item_key, name, "LOG_LEVEL")
        if isinstance(item, bool):
            text = "true" if item else "false"
        elif isinstance(item, (str, int, float)):
            text = str(item)
        elif item is None:
            ck.fail(item_key, "has no value; write '' for an empty string")
        else:
            ck.fail(
                item_key,
                f"expected a string, number or boolean, got {kind_of(item)}; env values are plain text (quote it)",
            )
        pairs.append((name, text))
    return tuple(sorted(pairs))


def _memory(ck: Checker, key: str, value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return ck.expect_int(key, value, "memory: 4g")
    if not isinstance(value, str):
        ck._wrong(key, "a size like 4g or 512m (or an integer of MiB)", value, "memory: 4g")
    match = _MEMORY_RE.match(value.strip())
    if not match:
        ck.fail(
            key, f"bad memory size '{shown(value)}'; write a number with m or g, e.g. 4g or 512m (or an integer of MiB)"
        )
    mib = round(float(match[1]) * (1024 if match[2].lower() == "g" else 1))
    if mib < 1:
        ck.fail(key, f"'{value}' is less than 1 MiB; use e.g. 4g")
    return mib


def _cpus(ck: Checker, key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        ck._wrong(key, "a number", value, "cpus: 2")
    if not value > 0 or value == float("inf"):
        ck.fail(key, f"{value} is out of range; use a number above 0, e.g. 2 or 0.5")
    return float(value)


def _resources(ck: Checker, key: str, value: object) -> Resources:
    res = ck.expect_mapping(key, value, "resources: {cpus: 2, memory: 4g, pids: 1024}")
    ck.known_keys(key, res, RESOURCES_KEYS)
    return Resources(
        cpus=ck.optional(res, key, "cpus", lambda k, v: _cpus(ck, k, v), Resources.cpus),
        memory_mib=ck.optional(res, key, "memory", lambda k, v: _memory(ck, k, v), Resources.memory_mib),
        pids=ck.optional(res, key, "pids", lambda k, v: ck.expect_int(k, v, "pids: 1024"), Resources.pids),
    )


def parse_pool_size(ck: Checker, key: str, value: object) -> int:
    """``pool: {size: N}`` (a bottle's, or config.yaml's default): how many warm bottles to keep."""
    spec = ck.expect_mapping(key, value, "pool: {size: 2}")
    ck.known_keys(key, spec, POOL_KEYS)
    return ck.optional(spec, key, "size", lambda k, v: ck.expect_int(k, v, "pool: {size: 2}", low=0, high=POOL_MAX), 0)


def parse_budget_value(ck: Checker, key: str, value: object) -> Budget:
    """``budget: {usd: N, tokens: N}`` (a manifest's, or config.yaml's default) as a Budget."""
    spec = ck.expect_mapping(key, value, "budget: {usd: 20}")
    problem = budget_problem(spec)
    if problem is not None:
        sub, _, rest = problem.partition(": ")
        if sub in ("usd", "tokens") and rest:
            ck.fail(sub_key(key, sub), rest)
        ck.fail(key, problem)
    return parse_budget(spec)


def _secrets_not_in_env(ck: Checker, spec: BottleSpec) -> None:
    secrets = {r.auth.token_env: f"egress.routes[{i}].auth.token_env" for i, r in enumerate(spec.routes) if r.auth}
    if spec.git and spec.git.credentials_env:
        secrets.setdefault(spec.git.credentials_env, "git.credentials_env")
    for name, _ in spec.env:
        if name in secrets:
            ck.fail(
                f"env.{name}",
                f"is the secret named by {secrets[name]}; secrets never go in env (the agent gets a placeholder), remove it",
            )


def parse_bottle(path: Path, text: str) -> BottleSpec:
    """Validate one bottles/<name>.md; the body is documentation for the operator and is not kept."""
    ck = Checker(path)
    fm, _ = read_front_matter(ck, text)
    ck.known_keys("", fm, BOTTLE_KEYS)
    # The bottle's dlp first: every route's settings are resolved over it.
    dlp = ck.optional(fm, "", "dlp", lambda k, v: parse_dlp(ck, k, v, DlpSettings()), DlpSettings())
    routes: tuple[Route, ...] = ck.optional(fm, "", "egress", lambda k, v: parse_routes(ck, k, v, dlp), ())
    spec = BottleSpec(
        name=_name(ck, fm, path, "bottle"),
        path=path,
        backend=ck.optional(fm, "", "backend", lambda k, v: ck.expect_choice(k, v, BACKENDS, "backend"), "docker"),
        description=_description(ck, fm),
        routes=routes,
        git=ck.optional(fm, "", "git", lambda k, v: _git(ck, k, v), None),
        supervise=ck.optional(fm, "", "supervise", lambda k, v: _supervise(ck, k, v), SuperviseSpec()),
        env=ck.optional(fm, "", "env", lambda k, v: _env(ck, k, v), ()),
        dlp=dlp,
        resources=ck.optional(fm, "", "resources", lambda k, v: _resources(ck, k, v), Resources()),
        budget=ck.optional(fm, "", "budget", lambda k, v: parse_budget_value(ck, k, v), None),
        metered=metered_hosts(ck, "egress", fm.get("egress"), routes),
        egress_workers=egress_workers(ck, "egress", fm.get("egress")),
        pool=ck.optional(fm, "", "pool", lambda k, v: parse_pool_size(ck, k, v), None),
    )
    _secrets_not_in_env(ck, spec)
    if spec.pool:
        if spec.git is not None:
            ck.fail(
                "pool.size",
                "a bottle with git: cannot be pooled (its mirror and checkout are made for each start); "
                "remove pool: or git:",
            )
        if spec.backend != "docker":
            ck.fail("pool.size", f"only docker bottles can be pooled, not {spec.backend}; remove pool:")
    return spec


# --- loading a home -----------------------------------------------------------------------------


def _md_files(folder: Path) -> list[Path]:
    try:
        if not folder.exists():
            return []
        if not folder.is_dir():
            raise ManifestError(folder, "", "is not a folder; move the file away so agents and bottles can live there")
        return sorted(
            (p for p in folder.iterdir() if p.suffix == ".md" and not p.name.startswith(".")), key=lambda p: p.name
        )
    except OSError as exc:
        raise ManifestError(
            folder, "", f"cannot list the folder: {exc.strerror or exc}; check its permissions"
        ) from None


def _read(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ManifestError(
            path, "", f"cannot read the file: {exc.strerror or exc}; check that it exists and is readable"
        ) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ManifestError(
            path, "", f"not UTF-8 (byte 0x{data[exc.start]:02x} on line {line}); save the file as UTF-8"
        ) from None


_S = TypeVar("_S", AgentSpec, BottleSpec)


def _load(files: list[Path], parse: Callable[[Path, str], _S], what: str) -> dict[str, _S]:
    specs: dict[str, _S] = {}
    for path in files:
        spec = parse(path, _read(path))
        if spec.name in specs:
            raise ManifestError(
                path,
                "name",
                f"{what} '{spec.name}' is already defined in {specs[spec.name].path}; give one of them another name",
            )
        specs[spec.name] = spec
    return specs


def load_manifests(home: Path) -> Manifests:
    """Read <home>/bottles and <home>/agents over the shipped defaults; the first problem raises ManifestError."""
    bottles = _load(_md_files(DEFAULTS_DIR / "bottles"), parse_bottle, "bottle")
    bottles.update(_load(_md_files(home / "bottles"), parse_bottle, "bottle"))
    agent_files = _md_files(home / "agents")
    from_defaults = not agent_files
    agents = _load(agent_files or _md_files(DEFAULTS_DIR / "agents"), parse_agent, "agent")
    for agent in agents.values():
        if agent.bottle not in bottles:
            known = sorted(bottles)
            match = difflib.get_close_matches(agent.bottle, known, n=1)
            hint = f"did you mean '{match[0]}'?" if match else f"known bottles: {', '.join(known) or 'none'}"
            raise ManifestError(
                agent.path,
                "bottle",
                f"no bottle named '{agent.bottle}'; {hint} (or add {home / 'bottles' / agent.bottle}.md)",
            )
    return Manifests(
        home=home,
        agents=MappingProxyType(dict(sorted(agents.items()))),
        bottles=MappingProxyType(dict(sorted(bottles.items()))),
        agents_from_defaults=from_defaults,
    )
