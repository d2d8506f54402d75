"""The credential egress injects for a route: the headers that carry it and every form of it that
an upstream could echo back (what the scrubber removes). The agent only ever holds a placeholder."""

from __future__ import annotations

import base64
from collections.abc import Mapping

from bottle_contract.policy import Route


class CredentialError(Exception):
    """A route's real secret cannot be used; `env_name` names the variable that should hold it."""

    def __init__(self, env_name: str, problem: str):
        super().__init__(f"{env_name} {problem}")
        self.env_name = env_name


class CredentialMissing(CredentialError):
    """The environment variable that should hold a route's real secret is unset or empty."""

    def __init__(self, env_name: str):
        super().__init__(env_name, "is not set in the sidecars container")


def _secret(route: Route, environ: Mapping[str, str]) -> str:
    assert route.auth is not None
    value = environ.get(route.auth.token_env, "")
    # An empty value is treated as missing: injecting it is useless and scrubbing "" is meaningless.
    if not value:
        raise CredentialMissing(route.auth.token_env)
    return value


def auth_headers(route: Route, environ: Mapping[str, str]) -> dict[str, str]:
    """The headers that carry the route's real credential; {} for a route without auth."""
    if route.auth is None:
        return {}
    value = _secret(route, environ)
    if route.auth.scheme == "bearer":
        return {"Authorization": f"Bearer {value}"}
    if route.auth.scheme == "basic":
        if ":" not in value:
            raise CredentialError(route.auth.token_env, "must hold user:password for basic auth")
        return {"Authorization": "Basic " + base64.b64encode(value.encode()).decode("ascii")}
    assert route.auth.header is not None
    return {route.auth.header: value}


def secret_values(route: Route, environ: Mapping[str, str]) -> list[str]:
    """Every form of the route's secret that an upstream could echo back to the agent."""
    if route.auth is None:
        return []
    value = _secret(route, environ)
    values = [value]
    if route.auth.scheme == "basic":
        values.append(base64.b64encode(value.encode()).decode("ascii"))
        password = value.split(":", 1)[1] if ":" in value else ""
        if password:
            values.append(password)
    return values
