"""A bottle manifest's ``egress.routes``, checked into the contract's ``Route`` (every default
resolved, so routes.yaml is fully explicit); one-line errors name the file and the key path."""

from __future__ import annotations

from typing import Any

from bottle_contract import policy, usage, workers
from bottle_contract.hosts import host_problem
from bottle_contract.policy import Auth, DlpSettings, Route

from .front_matter import Checker, did_you_mean, item_key, shown, sub_key

EGRESS_KEYS = ("routes", "workers")
# A manifest's route: routes.yaml's keys but ``once`` (which only an operator's decision sets), and
# ``usage`` (whose answers egress meters: metering.json, not routes.yaml).
ROUTE_KEYS = (*(k for k in policy.ROUTE_KEYS if k != "once"), "usage")
# Routes to this host are metered whatever the manifest says.
ANTHROPIC_API = "api.anthropic.com"
# A credential never crosses the network in clear text unless the bottle says so.
AUTH_DEFAULT_SCHEMES = ("https",)


def _host(ck: Checker, key: str, value: object) -> str:
    raw = ck.expect_str(key, value, '"api.example.com"')
    host = raw.lower()
    if "://" in host:
        bare = host.split("://", 1)[1].split("/", 1)[0].rpartition("@")[2].split(":", 1)[0] or "api.example.com"
        ck.fail(key, f"'{shown(raw)}' has a scheme; write the host name only, e.g. {bare}")
    if "/" in host:
        bare, _, rest = host.partition("/")
        ck.fail(
            key, f"'{shown(raw)}' has a path; write the host name only ({bare}) and list paths under paths: ['/{rest}']"
        )
    if ":" in host:
        bare, _, port = host.rpartition(":")
        ck.fail(
            key,
            f"'{shown(raw)}' has a port; write the host name only ({bare}) and list ports under ports: [{port or 443}]",
        )
    problem = host_problem(host)
    if problem is not None:
        ck.fail(key, f"'{shown(raw)}' {problem}")
    return host


def _ports(ck: Checker, key: str, value: object) -> tuple[int, ...]:
    items = ck.expect_list(
        key, value, "ports: [443]", non_empty="list at least one port, or leave ports out for 80 and 443"
    )
    ports = [ck.expect_int(item_key(key, i), p, "443", low=1, high=65535) for i, p in enumerate(items)]
    return tuple(dict.fromkeys(ports))


def _methods(ck: Checker, key: str, value: object) -> tuple[str, ...]:
    items = ck.expect_str_list(key, value, "methods: [GET, POST]", non_empty="leave methods out to allow any method")
    methods = []
    for i, item in enumerate(items):
        method = item.upper()
        if policy.method_problem(method) is not None:
            ck.fail(
                item_key(key, i), f"unknown HTTP method '{shown(item)}'; {did_you_mean(method, policy.HTTP_METHODS)}"
            )
        methods.append(method)
    return tuple(dict.fromkeys(methods))


def _paths(ck: Checker, key: str, value: object) -> tuple[str, ...]:
    items = ck.expect_str_list(key, value, 'paths: ["/v1/*"]', non_empty="leave paths out to allow any path")
    for i, item in enumerate(items):
        if not item.startswith("/"):
            ck.fail(item_key(key, i), f"path '{shown(item)}' must start with '/', e.g. '/{item.lstrip('./')}'")
        if (problem := policy.path_pattern_problem(item)) is not None:
            ck.fail(item_key(key, i), problem)
    return tuple(dict.fromkeys(items))


def _schemes(ck: Checker, key: str, value: object) -> tuple[str, ...]:
    items = ck.expect_str_list(key, value, "schemes: [https]", non_empty="leave schemes out for the default")
    schemes = [
        ck.expect_choice(item_key(key, i), item.lower(), policy.SCHEMES, "scheme") for i, item in enumerate(items)
    ]
    return tuple(dict.fromkeys(schemes))


def _model_tools(ck: Checker, key: str, value: object) -> tuple[str, ...]:
    items = ck.expect_str_list(key, value, "model_tools: [web_search]")
    tools = [ck.expect_choice(item_key(key, i), item, policy.MODEL_TOOLS, "model tool") for i, item in enumerate(items)]
    return tuple(dict.fromkeys(tools))


def _auth(ck: Checker, key: str, value: object) -> Auth:
    auth = ck.expect_mapping(key, value, "auth: {scheme: bearer, token_env: API_TOKEN}")
    ck.known_keys(key, auth, policy.AUTH_KEYS)
    scheme = ck.expect_choice(
        sub_key(key, "scheme"),
        ck.required(key, auth, "scheme", f"use one of: {', '.join(policy.AUTH_SCHEMES)}"),
        policy.AUTH_SCHEMES,
        "auth scheme",
    )
    token_env = ck.expect_env_name(
        sub_key(key, "token_env"),
        ck.required(
            key,
            auth,
            "token_env",
            "name the host environment variable that holds the credential, e.g. token_env: API_TOKEN",
        ),
        "API_TOKEN",
    )
    header = auth.get("header")
    if scheme == "header":
        header = ck.required(key, auth, "header", "scheme: header needs the header name, e.g. header: x-api-key")
        header = ck.expect_str(sub_key(key, "header"), header, "x-api-key")
        if not policy.HEADER_NAME_RE.match(header):
            ck.fail(sub_key(key, "header"), f"'{shown(header)}' is not an HTTP header name, e.g. x-api-key")
    elif header is not None:
        ck.fail(
            sub_key(key, "header"),
            f"only used with scheme: header ({scheme} sets Authorization); remove it or set scheme: header",
        )
    return Auth(scheme=scheme, token_env=token_env, header=header)


def _route(ck: Checker, key: str, value: object, bottle_dlp: DlpSettings) -> Route:
    route = ck.expect_mapping(key, value, "- host: api.example.com")
    ck.known_keys(key, route, ROUTE_KEYS)
    host = _host(
        ck, sub_key(key, "host"), ck.required(key, route, "host", "every route needs one, e.g. host: api.example.com")
    )
    auth = ck.optional(route, key, "auth", lambda k, v: _auth(ck, k, v), None)
    # Every default is resolved here: routes.yaml is written fully explicit and egress refuses
    # anything less, so the defaults live in this one place.
    return Route(
        host=host,
        ports=ck.optional(route, key, "ports", lambda k, v: _ports(ck, k, v), policy.DEFAULT_PORTS),
        methods=ck.optional(route, key, "methods", lambda k, v: _methods(ck, k, v), ()),
        paths=ck.optional(route, key, "paths", lambda k, v: _paths(ck, k, v), ()),
        auth=auth,
        schemes=ck.optional(
            route, key, "schemes", lambda k, v: _schemes(ck, k, v), AUTH_DEFAULT_SCHEMES if auth else policy.SCHEMES
        ),
        dlp=ck.optional(route, key, "dlp", lambda k, v: parse_dlp(ck, k, v, bottle_dlp), bottle_dlp),
        model_tools=ck.optional(route, key, "model_tools", lambda k, v: _model_tools(ck, k, v), ()),
    )


def parse_routes(ck: Checker, key: str, value: object, bottle_dlp: DlpSettings) -> tuple[Route, ...]:
    egress = ck.expect_mapping(key, value, "egress: {routes: [...]}")
    ck.known_keys(key, egress, EGRESS_KEYS)
    items: list[Any] = ck.optional(
        egress, key, "routes", lambda k, v: ck.expect_list(k, v, "routes: [{host: api.example.com}]"), []
    )
    routes: list[Route] = []
    seen: dict[tuple[Any, ...], int] = {}
    for i, item in enumerate(items):
        route = _route(ck, item_key(sub_key(key, "routes"), i), item, bottle_dlp)
        identity = route.identity()[:4]
        if identity in seen:
            ck.fail(
                item_key(sub_key(key, "routes"), i),
                f"same host, ports, methods and paths as routes[{seen[identity]}]; remove one or merge them",
            )
        seen[identity] = i
        routes.append(route)
    return tuple(routes)


def egress_workers(ck: Checker, key: str, value: object) -> int | str:
    """``egress.workers``: how many egress processes share the proxy port (a count, or ``auto``:
    one per CPU of the bundle, up to bottle_contract.workers.AUTO_MAX). ``value`` is the checked
    egress mapping."""
    found = value.get("workers") if isinstance(value, dict) else None
    if found is None:
        return workers.AUTO
    if (problem := workers.workers_problem(found)) is not None:
        ck.fail(sub_key(key, "workers"), f"{problem}; write e.g. workers: 2")
    return int(found) if found != workers.AUTO else workers.AUTO


def metered_hosts(ck: Checker, key: str, value: object, routes: tuple[Route, ...]) -> tuple[str, ...]:
    """The hosts whose model calls egress meters: api.anthropic.com's routes and those with
    ``usage: anthropic`` (the API whose ``usage`` egress reads). ``value`` is the checked egress mapping."""
    items = value.get("routes") or [] if isinstance(value, dict) else []
    hosts = [ANTHROPIC_API]
    for i, (item, route) in enumerate(zip(items, routes, strict=False)):
        api = ck.optional(
            item,
            item_key(sub_key(key, "routes"), i),
            "usage",
            lambda k, v: ck.expect_choice(k, v, usage.APIS, "usage API"),
            None,
        )
        if api is not None or route.host == ANTHROPIC_API:
            hosts.append(route.host)
    return tuple(dict.fromkeys(hosts))


def parse_dlp(ck: Checker, key: str, value: object, base: DlpSettings) -> DlpSettings:
    """A ``dlp:`` mapping over ``base``: body and max_body_bytes replace it, disabled_rules add to it
    (a route's settings over the bottle's, the bottle's over the defaults)."""
    dlp = ck.expect_mapping(key, value, "dlp: {body: false}")
    ck.known_keys(key, dlp, policy.DLP_KEYS)

    def rules(k: str, v: object) -> tuple[str, ...]:
        items = ck.expect_str_list(k, v, "disabled_rules: [generic-api-key]")
        for i, rule in enumerate(items):
            if (problem := policy.rule_problem(rule)) is not None:
                ck.fail(item_key(k, i), problem)
        return tuple(items)

    added: tuple[str, ...] = ck.optional(dlp, key, "disabled_rules", rules, ())
    return DlpSettings(
        body=ck.optional(dlp, key, "body", lambda k, v: ck.expect_bool(k, v, "body: false"), base.body),
        disabled_rules=tuple(dict.fromkeys(base.disabled_rules + added)),
        max_body_bytes=ck.optional(
            dlp, key, "max_body_bytes", lambda k, v: ck.expect_int(k, v, "max_body_bytes: 8388608"), base.max_body_bytes
        ),
    )
