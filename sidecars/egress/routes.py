"""Egress's side of routes.yaml: which route, if any, allows a request.

routes.yaml itself (schema, validation, the Route/Policy types) is the contract's
(``bottle_contract.policy``), shared with the host that writes it and supervise that withdraws
routes allowed once. The checks of a request target that hold on every route are
``request_target``'s; the credential is ``credentials``', its scrubbing ``scrubber``'s. Pure
(stdlib + the contract), so the rules are unit-tested without mitmproxy.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass

from request_target import limited_path_problem, path_problem

from bottle_contract.hosts import normalize_host
from bottle_contract.policy import HTTP_METHODS, Auth, Policy, Route, load_policy, load_policy_text, route_path

__all__ = ["Auth", "Policy", "Route", "normalize_host"]


@dataclass(frozen=True)
class Decision:
    allowed: bool
    route_index: int | None
    reason: str


def could_allow(policy: Policy, host: str, port: int) -> bool:
    """True when some route allows host:port for some method/path (a cheap pre-check for raw connects)."""
    return any(r.matches_host(host) and port in r.ports for r in policy.routes)


def matches_path(route: Route, path: str) -> bool:
    """Whether the decoded ``path`` falls under the route's globs (no globs: any path)."""
    return not route.paths or any(fnmatch.fnmatchcase(path, p) for p in route.paths)


def match(
    policy: Policy, method: str, scheme: str, host: str, port: int, path: str, overrides: Iterable[str] = ()
) -> Decision:
    """First route that allows the request wins; the reason of a block names the first rule that failed.

    ``overrides``: the methods the request asks for through method-override headers (or a
    ``_method`` query parameter); a route limited by method must allow each of them too.
    """
    method = method.upper()
    scheme = scheme.lower()
    host = normalize_host(host)
    overrides = tuple(o.strip().upper() for o in overrides)
    problem = path_problem(path)
    if problem:
        return Decision(False, None, problem)
    match_path = route_path(path)
    by_host = [(i, r) for i, r in enumerate(policy.routes) if r.matches_host(host)]
    if not by_host:
        return Decision(False, None, f"no route for host {host}")
    by_port = [(i, r) for i, r in by_host if port in r.ports]
    if not by_port:
        return Decision(False, None, f"no route for port {port} of host {host}")
    by_method = [(i, r) for i, r in by_port if not r.methods or method in r.methods]
    if not by_method:
        return Decision(False, None, f"no route for method {method} on {host}:{port}")
    # Servers that honour X-HTTP-Method-Override and friends act on the overriding method.
    by_override = [(i, r) for i, r in by_method if not r.methods or all(o in r.methods for o in overrides)]
    if not by_override:
        # An override that is no method is the agent's text: never echoed.
        shown = "/".join(o if o in HTTP_METHODS else "an unknown method" for o in overrides)
        return Decision(False, None, f"method override to {shown} not allowed on {host}:{port}")
    by_path = [(i, r) for i, r in by_override if matches_path(r, match_path)]
    if not by_path:
        return Decision(False, None, f"no route for path {match_path} on {host}:{port}")
    if any(r.paths for _, r in by_path):
        problem = limited_path_problem(path)
        if problem:
            by_path = [(i, r) for i, r in by_path if not r.paths]
            if not by_path:
                return Decision(False, None, problem)
    for i, r in by_path:
        if scheme in r.schemes:
            return Decision(True, i, f"route {i} ({r.host})")
    i, r = by_path[0]
    return Decision(False, None, f"route {i} does not allow scheme {scheme}")


def load_routes(path: str) -> Policy:
    """routes.yaml at ``path``; ValueError (the contract's PolicyError) naming the key otherwise."""
    return load_policy(path)


def parse_routes(text: str, source: str = "routes.yaml") -> Policy:
    return load_policy_text(text, source)
