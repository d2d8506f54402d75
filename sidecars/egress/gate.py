"""The route gate: the first decision on every HTTP request, taken on its headers before any of
its body is read. A request passes only when it names one destination (request line, Host, SNI
agree), its target is unambiguous and a route of routes.yaml allows it; the gate then resolves the
route's credential and leaves the flow Pending for the checks of its content (DLP, the model API)
and for injection. The last guard, server_connect, refuses any upstream no route names."""

from __future__ import annotations

import credentials as C
import request_target as T
import routes as R
from decisions import REFUSED_SUFFIX, DecisionLog, declared_length, flow_fields
from failclosed import CONNECT, REQUEST, guarded
from mitmproxy import http
from policy_store import ROUTE_BODY, Pending, PolicyStore

from bottle_contract.policy import HTTP_METHODS

# Decisions of this kind are answered by the addon itself rather than the upstream.
NO_ROUTE_PREFIX = "no route"
# Meant for the proxy only (hop-by-hop): never forwarded upstream. Connection, TE, Upgrade and
# Transfer-Encoding mitmproxy handles itself.
PROXY_HEADERS = ("proxy-authorization", "proxy-connection", "proxy-authenticate", "keep-alive")
# Connection tokens mitmproxy acts on; any other token names a header to drop, except the ones
# that frame or route the request (dropping those would change how the body is read upstream).
CONNECTION_TOKENS = {"close", "keep-alive", "upgrade"}
FRAMING_HEADERS = {"host", "content-length", "transfer-encoding", "upgrade", "te"}


def strip_proxy_headers(headers: http.Headers) -> None:
    """Drop the headers meant for this proxy (and those the Connection header names) before the
    request goes upstream: Proxy-Authorization and friends stop at egress."""
    named = set()
    for value in headers.get_all("connection"):
        named |= {t.strip().lower() for t in value.split(",") if t.strip()}
    extra = named - CONNECTION_TOKENS - FRAMING_HEADERS
    for name in (*PROXY_HEADERS, *extra):
        if name in headers:
            del headers[name]
    if named - CONNECTION_TOKENS:
        kept = [t for t in named if t in CONNECTION_TOKENS]
        if kept:
            headers["connection"] = ", ".join(sorted(kept))
        else:
            del headers["connection"]


class RouteGate:
    # http_connect is deliberately not hooked: with connection_strategy=lazy a CONNECT opens no
    # upstream connection, so every tunnel forms and the request inside it gets the 403 below,
    # which the agent can read (a refused CONNECT would only show "tunnel failed").
    def __init__(self, store: PolicyStore, log: DecisionLog):
        self.store = store
        self.log = log

    def _refuse(self, flow: http.HTTPFlow, target: str, reason: str, fields: dict) -> None:
        self.log.block(flow, reason, f"egress: blocked {target}: {reason} (bottle {self.store.bottle})\n", fields)

    @guarded("route gate", REQUEST)
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        store = self.store
        store.reload()
        req = flow.request
        strip_proxy_headers(req.headers)
        fields = flow_fields(req)
        target = f"{req.method} {req.host}:{req.port}{fields['path']}"

        if store.policy is None:
            reason = f"no valid routes.yaml: {store.policy_error}"
            return self.log.block(flow, reason, f"egress: blocked {target}: {reason}\n", fields)
        if req.data.method.decode("latin-1") not in HTTP_METHODS:  # as sent: mitmproxy's .method is upper-cased
            # Any other token (or not a token at all) is the agent's text: neither logged nor echoed.
            fields["method"] = ""
            target = f"{req.host}:{req.port}{fields['path']}"
            return self._refuse(flow, target, f"the method is not one of {', '.join(HTTP_METHODS)}", fields)
        problem = T.git_push_problem(req.path, req.headers.items(multi=True))
        if problem:
            return self._refuse(flow, target, problem, fields)
        problem = T.rewrite_header_problem(req.headers.items(multi=True))
        if problem:
            return self._refuse(flow, target, problem, fields)
        problem = T.authority_problem(
            req.host,
            req.port,
            T.target_authorities(req.authority, req.path),
            req.headers.get_all("host"),
            flow.client_conn.sni,
        )
        if problem:
            reason, claimed = problem
            # Logged as what it was: a request for the host it names, sent through another's tunnel.
            fields["host"] = claimed
            reason = f"{reason} (fronting)" if claimed != R.normalize_host(req.host) else reason
            return self._refuse(flow, target, reason, fields)
        query = req.path.split("?", 1)[1] if "?" in req.path else ""
        overrides = T.method_overrides(req.headers.items(multi=True), query)
        decision = R.match(store.policy, req.method, req.scheme, req.host, req.port, req.path, overrides)
        if not decision.allowed:
            if decision.reason.startswith(NO_ROUTE_PREFIX):
                body = f"egress: blocked {target}: no route in routes.yaml of bottle {store.bottle} allows it\n"
            else:
                body = f"egress: blocked {target}: {decision.reason} (routes.yaml of bottle {store.bottle})\n"
            return self.log.block(flow, decision.reason, body, fields)

        route = store.policy.routes[decision.route_index]
        headers: dict[str, str] = {}
        secrets: list[str] = []
        if route.auth is not None:
            try:
                headers = C.auth_headers(route, store.environ)
                secrets = C.secret_values(route, store.environ)
            except C.CredentialError as e:
                reason = f"credential {e}"
                body = f"egress: {reason} (route {decision.route_index} of bottle {store.bottle})\n"
                return self.log.block(
                    flow, reason, body, fields, status=502, decision="error", route=decision.route_index
                )
        pending = Pending(decision.route_index, decision.reason, headers, secrets, route.dlp, fields, once=route.once)
        if route.methods and T.may_override_in_body(req.headers.get("content-type", "")):
            # A form or JSON body may carry `_method`: checked once the body is here (buffered).
            length = declared_length(req)
            if length is not None and length > route.dlp.max_body_bytes:
                reason = f"a body of {length} bytes is too large to check for a method override on route {decision.route_index}"
                return self._refuse(flow, target, reason, fields)
            pending.required.add(ROUTE_BODY)
        store.pending[flow.id] = pending

    @guarded("route gate", REQUEST)
    def request(self, flow: http.HTTPFlow) -> None:
        refusal = self.store.refusals.pop(flow.id, None)
        if refusal is not None and flow.response is None:
            flow.response = refusal  # the request had no body after all: answer it here
        pending = self.store.pending.get(flow.id)
        if pending is None or ROUTE_BODY not in pending.required:
            return
        req = flow.request
        overrides = T.body_method_overrides(req.raw_content or b"", req.headers.get("content-type", ""))
        if overrides:
            query = req.path.split("?", 1)[1] if "?" in req.path else ""
            overrides += T.method_overrides(req.headers.items(multi=True), query)
            decision = R.match(self.store.policy, req.method, req.scheme, req.host, req.port, req.path, overrides)
            if not decision.allowed or decision.route_index != pending.route:
                f = pending.fields
                target = f"{f['method']} {f['host']}:{f['port']}{f['path']}"
                reason = decision.reason if not decision.allowed else "a method override in the body changes the route"
                return self.log.block(
                    flow,
                    reason,
                    f"egress: blocked {target}: {reason} (body _method; bottle {self.store.bottle})\n",
                    f,
                    body_read=True,
                )
        pending.cleared.add(ROUTE_BODY)

    @guarded("upstream connection guard", CONNECT)
    def server_connect(self, data) -> None:
        """Last guard: no upstream connection to an address that no route names, whatever asked."""
        if data.server.error or not data.server.address:
            return
        host, port = data.server.address[:2]
        if str(host).endswith(REFUSED_SUFFIX):
            refusal = self.store.refusals.pop(str(host)[: -len(REFUSED_SUFFIX)], None)
            # Already logged by requestheaders; this is only how mitmproxy is made to answer.
            data.server.error = refusal.text.strip() if refusal is not None else "egress: blocked"
            return
        if self.store.policy is not None and R.could_allow(self.store.policy, str(host), int(port)):
            return
        reason = f"no route for {host}:{port}"
        data.server.error = f"egress: {reason}"
        self.log.record("block", method="", scheme="tcp", host=host, port=port, path="", route=None, reason=reason)
