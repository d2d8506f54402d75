"""routes.yaml, the policy egress enforces: its schema, its validation and its rendering.

The host renders it fully explicit from the bottle's manifest (every default resolved there) and
rewrites it when the operator decides; egress loads it on every change and keeps the previous
policy when a new one is invalid; supervise withdraws a route allowed once. All three read and
write it through this module, so the file has one definition::

    version: 1
    bottle: <name>
    dlp: {body: bool, disabled_rules: [rule id, ...], max_body_bytes: int}   # the bottle's own
    routes:
      - host: api.example.com | "*.example.com" | 10.0.0.1
        ports: [443]                 # at least one
        methods: []                  # [] = any
        paths: []                    # [] = any; globs with '*'
        schemes: [https]             # at least one of http, https
        auth: null | {scheme: bearer|basic|header, token_env: NAME, header: NAME|null}
        dlp: {body, disabled_rules, max_body_bytes}   # the route's resolved settings
        model_tools: []              # server-side tools of a model API this route may turn on
        once: null | <proposal id>   # allowed for one request only (an operator's `once` approval)

Every key is required (the sidecar refuses anything implicit and has no defaults of its own).
Problems raise PolicyError: one line, ``<source>: <key>: <problem>``. Stdlib only; the YAML
reading and writing import pyyaml when called (every side that calls them has it).
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from .hosts import host_matches, host_problem, normalize_host

VERSION = 1
SCHEMES = ("http", "https")
AUTH_SCHEMES = ("bearer", "basic", "header")
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE")
DEFAULT_PORTS = (80, 443)
DEFAULT_MAX_BODY = 8 * 1024 * 1024
# Server-side tools of a model API that reach the internet on the agent's behalf (egress refuses
# a request that turns one on unless its route names it).
MODEL_TOOLS = ("web_search", "web_fetch", "code_execution", "mcp_servers")

TOP_KEYS = ("version", "bottle", "dlp", "routes")
ROUTE_KEYS = ("host", "ports", "methods", "paths", "schemes", "auth", "dlp", "model_tools", "once")
AUTH_KEYS = ("scheme", "token_env", "header")
DLP_KEYS = ("body", "disabled_rules", "max_body_bytes")

RULE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")  # a gitleaks rule id
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
HEADER_NAME_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an RFC 9110 token


class PolicyError(ValueError):
    """A bad policy: ``<source>: <key>: <problem>`` on one line."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        self.source, self.key, self.problem = source, key, " ".join(problem.split())
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{key}: {self.problem}" if key else f"{where}{self.problem}")


@dataclass(frozen=True)
class DlpSettings:
    """DLP of one route's requests: ``body: false`` skips bodies (LLM APIs carry code that trips
    generic rules); ``disabled_rules`` are gitleaks rule ids not applied; a body over
    ``max_body_bytes`` is blocked unscanned."""

    body: bool = True
    disabled_rules: tuple[str, ...] = ()
    max_body_bytes: int = DEFAULT_MAX_BODY

    def to_doc(self) -> dict[str, Any]:
        return {"body": self.body, "disabled_rules": list(self.disabled_rules), "max_body_bytes": self.max_body_bytes}


@dataclass(frozen=True)
class Auth:
    scheme: str  # bearer | basic | header
    token_env: str
    header: str | None = None  # scheme header only

    def to_doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"scheme": self.scheme, "token_env": self.token_env}
        if self.header is not None:
            doc["header"] = self.header
        return doc


def route_path(target: str) -> str:
    """The path a route's ``paths`` globs are matched against, from a request target or the raw
    path egress logs: the query dropped, percent-decoded once, ``/`` when empty
    (``/%76%31/x?a=1`` is ``/v1/x``). egress matches with it and supervise's drafts propose it, so
    approving a draft allows the very request that made it."""
    return urllib.parse.unquote(target.split("?", 1)[0]) or "/"


@dataclass(frozen=True)
class Route:
    host: str  # normalised; "*.example.com" matches any subdomain, not the apex
    ports: tuple[int, ...]
    methods: tuple[str, ...] = ()  # empty = any method
    paths: tuple[str, ...] = ()  # empty = any path
    auth: Auth | None = None
    schemes: tuple[str, ...] = SCHEMES
    dlp: DlpSettings = DlpSettings()
    model_tools: tuple[str, ...] = ()
    once: str | None = None  # the proposal whose `once` approval added this route

    def matches_host(self, host: str) -> bool:
        return host_matches(self.host, host)

    def identity(self) -> tuple[Any, ...]:
        """What makes two routes the same route (list order aside; schemes follow from auth)."""
        return (self.host, frozenset(self.ports), frozenset(self.methods), frozenset(self.paths), self.auth)

    def to_doc(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "ports": list(self.ports),
            "methods": list(self.methods),
            "paths": list(self.paths),
            "schemes": list(self.schemes),
            "auth": self.auth.to_doc() if self.auth else None,
            "dlp": self.dlp.to_doc(),
            "model_tools": list(self.model_tools),
            "once": self.once,
        }


@dataclass(frozen=True)
class Policy:
    bottle: str
    routes: tuple[Route, ...] = field(default_factory=tuple)
    dlp: DlpSettings = DlpSettings()  # the bottle's own; routes added later start from it

    def to_doc(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "bottle": self.bottle,
            "dlp": self.dlp.to_doc(),
            "routes": [r.to_doc() for r in self.routes],
        }

    def unknown_rules(self, known: Iterable[str]) -> str | None:
        """``<key>: unknown gitleaks rule id '<id>'`` when a route or the bottle disables a rule
        the rules in force do not have, else None."""
        known = set(known)
        for i, r in enumerate(self.routes):
            for rule in r.dlp.disabled_rules:
                if rule not in known:
                    return f"routes[{i}].dlp.disabled_rules: unknown gitleaks rule id {rule!r}"
        for rule in self.dlp.disabled_rules:
            if rule not in known:
                return f"dlp.disabled_rules: unknown gitleaks rule id {rule!r}"
        return None

    def without_once(self, proposal_id: str) -> Policy:
        """This policy with the route allowed once by ``proposal_id`` withdrawn."""
        return replace(self, routes=tuple(r for r in self.routes if r.once != proposal_id))


# --- the rules of each value (the manifest's friendlier checks end in these too) -----------------


def method_problem(method: str) -> str | None:
    return None if method in HTTP_METHODS else f"{method[:20]!r} is not one of {', '.join(HTTP_METHODS)}"


def path_pattern_problem(path: str) -> str | None:
    if not path.startswith(("/", "*")):
        return f"{path[:80]!r} must start with '/'"
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in path):
        return f"{path[:80]!r} has spaces or control characters"
    return None


def rule_problem(rule: str) -> str | None:
    return None if RULE_ID_RE.match(rule) else f"{rule[:60]!r} is not a gitleaks rule id, e.g. generic-api-key"


# --- parsing ------------------------------------------------------------------------------------


class _Reader:
    def __init__(self, source: str) -> None:
        self.source = source

    def bad(self, key: str, problem: str) -> PolicyError:
        return PolicyError(self.source, key, problem)

    def mapping(self, raw: object, key: str, keys: tuple[str, ...]) -> dict[str, Any]:
        """``raw`` as a mapping holding exactly ``keys`` (every one required)."""
        if not isinstance(raw, dict):
            raise self.bad(key, "must be a mapping with keys " + ", ".join(keys))
        unknown = sorted(set(map(str, raw)) - set(keys))
        if unknown:
            raise self.bad(f"{key}.{unknown[0]}" if key else unknown[0], "unknown key")
        for name in keys:
            if name not in raw:
                raise self.bad(f"{key}.{name}" if key else name, "missing: routes.yaml lists every key")
        return raw

    def str_list(self, raw: object, key: str) -> tuple[str, ...]:
        if not isinstance(raw, list) or not all(isinstance(v, str) and v for v in raw):
            raise self.bad(key, "must be a list of non-empty strings")
        return tuple(raw)

    def dlp(self, raw: object, key: str) -> DlpSettings:
        d = self.mapping(raw, key, DLP_KEYS)
        if not isinstance(d["body"], bool):
            raise self.bad(f"{key}.body", f"must be true or false, got {d['body']!r}")
        n = d["max_body_bytes"]
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            raise self.bad(f"{key}.max_body_bytes", f"must be a positive number of bytes, got {n!r}")
        rules = d["disabled_rules"]
        if not isinstance(rules, list) or not all(isinstance(r, str) for r in rules):
            raise self.bad(f"{key}.disabled_rules", "must be a list of gitleaks rule ids")
        for i, r in enumerate(rules):
            if (problem := rule_problem(r)) is not None:
                raise self.bad(f"{key}.disabled_rules[{i}]", problem)
        return DlpSettings(body=d["body"], disabled_rules=tuple(dict.fromkeys(rules)), max_body_bytes=n)

    def auth(self, raw: object, key: str) -> Auth:
        if not isinstance(raw, dict):
            raise self.bad(key, "must be null or a mapping with keys scheme, token_env (and header)")
        unknown = sorted(set(map(str, raw)) - set(AUTH_KEYS))
        if unknown:
            raise self.bad(f"{key}.{unknown[0]}", "unknown key")
        scheme = raw.get("scheme")
        if scheme not in AUTH_SCHEMES:
            raise self.bad(f"{key}.scheme", f"must be one of {', '.join(AUTH_SCHEMES)}, got {scheme!r}")
        token_env = raw.get("token_env")
        if not isinstance(token_env, str) or not ENV_NAME_RE.match(token_env):
            raise self.bad(f"{key}.token_env", "must be the name of an environment variable")
        header = raw.get("header")
        if scheme == "header":
            if not isinstance(header, str) or not HEADER_NAME_RE.match(header):
                raise self.bad(f"{key}.header", "must be an HTTP header name for scheme 'header'")
        elif header is not None:
            raise self.bad(f"{key}.header", f"only used with scheme 'header', not {scheme!r}")
        return Auth(scheme=scheme, token_env=token_env, header=header)

    def route(self, raw: object, key: str) -> Route:
        r = self.mapping(raw, key, ROUTE_KEYS)
        if not isinstance(r["host"], str) or not r["host"].strip():
            raise self.bad(f"{key}.host", "must be a non-empty string")
        host = normalize_host(r["host"])
        if (problem := host_problem(host)) is not None:
            raise self.bad(f"{key}.host", f"{host[:80]!r} {problem}")
        ports = r["ports"]
        if (
            not isinstance(ports, list)
            or not ports
            or not all(isinstance(p, int) and not isinstance(p, bool) and 0 < p < 65536 for p in ports)
        ):
            raise self.bad(f"{key}.ports", "must be a non-empty list of port numbers (1-65535)")
        methods = tuple(m.upper() for m in self.str_list(r["methods"], f"{key}.methods"))
        for m in methods:
            if (problem := method_problem(m)) is not None:
                raise self.bad(f"{key}.methods", problem)
        paths = self.str_list(r["paths"], f"{key}.paths")
        for p in paths:
            if (problem := path_pattern_problem(p)) is not None:
                raise self.bad(f"{key}.paths", problem)
        schemes = tuple(s.lower() for s in self.str_list(r["schemes"], f"{key}.schemes"))
        if not schemes or any(s not in SCHEMES for s in schemes):
            raise self.bad(f"{key}.schemes", "must list at least one of http, https and nothing else")
        tools = self.str_list(r["model_tools"], f"{key}.model_tools")
        for t in tools:
            if t not in MODEL_TOOLS:
                raise self.bad(f"{key}.model_tools", f"{t[:40]!r} is not one of {', '.join(MODEL_TOOLS)}")
        from .proposal import is_id  # proposal imports this module

        once = r["once"]
        if once is not None and not is_id(once):
            raise self.bad(f"{key}.once", "must be null or the id of the proposal approved once")
        return Route(
            host=host,
            ports=tuple(dict.fromkeys(ports)),
            methods=tuple(dict.fromkeys(methods)),
            paths=tuple(dict.fromkeys(paths)),
            auth=self.auth(r["auth"], f"{key}.auth") if r["auth"] is not None else None,
            schemes=tuple(dict.fromkeys(schemes)),
            dlp=self.dlp(r["dlp"], f"{key}.dlp"),
            model_tools=tuple(dict.fromkeys(tools)),
            once=once,
        )


def parse_policy(doc: object, source: str = "routes.yaml") -> Policy:
    """A loaded routes.yaml document as a Policy; PolicyError naming the key otherwise."""
    rd = _Reader(source)
    if not isinstance(doc, dict):
        raise rd.bad("", "expected a mapping with keys " + ", ".join(TOP_KEYS))
    d = rd.mapping(doc, "", TOP_KEYS)
    if d["version"] != VERSION or isinstance(d["version"], bool):
        raise rd.bad("version", f"must be {VERSION}, got {d['version']!r}")
    if not isinstance(d["bottle"], str) or not d["bottle"].strip():
        raise rd.bad("bottle", "must be a non-empty string")
    if not isinstance(d["routes"], list):
        raise rd.bad("routes", "must be a list (it may be empty)")
    routes = tuple(rd.route(r, f"routes[{i}]") for i, r in enumerate(d["routes"]))
    return Policy(bottle=d["bottle"].strip(), routes=routes, dlp=rd.dlp(d["dlp"], "dlp"))


def load_policy_text(text: str, source: str = "routes.yaml") -> Policy:
    """routes.yaml text as a Policy (YAML parsed with pyyaml's safe loader)."""
    import yaml

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise PolicyError(source, "", f"invalid YAML{where}: {getattr(e, 'problem', None) or 'cannot parse'}") from None
    except RecursionError:
        raise PolicyError(source, "", "invalid YAML: nested too deeply") from None
    return parse_policy(doc, source)


def load_policy(path: str) -> Policy:
    """routes.yaml at ``path``; PolicyError (naming the file) when it cannot be read or is invalid."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise PolicyError(path, "", f"cannot read: {getattr(e, 'strerror', None) or e}") from None
    return load_policy_text(text, path)


def yaml_text(doc: dict[str, Any]) -> str:
    """A document as YAML the way people read it: keys in the given order, no &anchors or *aliases
    (shared sub-documents written out in full), block style. routes.yaml and compose files."""
    import yaml

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    return str(yaml.dump(doc, Dumper=Dumper, sort_keys=False))
