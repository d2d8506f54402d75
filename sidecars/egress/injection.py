"""Credential injection, the last step before an allowed request leaves: it admits a flow only
when every check its route requires has cleared it (a check that raised or never ran leaves its
stage uncleared, and the flow is refused), uses up a route allowed once, logs the decision and
replaces whatever the agent sent in the route's auth headers with the real credential."""

from __future__ import annotations

from decisions import DecisionLog
from failclosed import REQUEST, guarded
from mitmproxy import http
from policy_store import DLP_HEAD, Pending, PolicyStore
from scrubber import Scrubber


class NotCleared(Exception):
    """An allowed flow reached injection with a required check not passed (fails closed)."""


class CredentialInjection:
    def __init__(self, store: PolicyStore, log: DecisionLog):
        self.store = store
        self.log = log
        # Building a Scrubber (every encoded form of a secret) costs more than the rest of a
        # request: one per set of secrets, kept while the secrets stay the same.
        self._scrubber: tuple[tuple[str, ...], Scrubber] | None = None

    def _scrubber_for(self, secrets: list[str]) -> Scrubber:
        key = tuple(secrets)
        if self._scrubber is None or self._scrubber[0] != key:
            self._scrubber = (key, Scrubber(secrets))
        return self._scrubber[1]

    def _decided(self, flow: http.HTTPFlow) -> bool:
        """Whether an earlier addon already answered, refused or killed the flow."""
        return flow.response is not None or flow.error is not None or flow.id in self.store.refusals

    @guarded("credential injection", REQUEST)
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if self._decided(flow):
            return
        pending = self.store.pending.get(flow.id)
        if pending is None or pending.missing({DLP_HEAD}):
            raise NotCleared("the request's headers were not cleared")
        if pending.once is not None:
            # A route allowed once admits one request, counted here at its headers (not after its
            # body): a second one is refused even before supervise has withdrawn the route.
            if not self.store.claim_once(pending.once):
                reason = f"route {pending.route} was allowed once and has been used"
                f = pending.fields
                target = f"{f['method']} {f['host']}:{f['port']}{f['path']}"
                return self.log.block(
                    flow, reason, f"egress: blocked {target}: {reason} (bottle {self.store.bottle})\n", f
                )
        if pending.streamed:
            if pending.missing():
                raise NotCleared("a streamed request was not cleared")
            self._admit(flow, pending)

    @guarded("credential injection", REQUEST)
    def request(self, flow: http.HTTPFlow) -> None:
        if self._decided(flow):
            return
        pending = self.store.pending.get(flow.id)
        if pending is None:
            if flow.id in self.store.admitted:
                return  # admitted at its headers (a streamed body)
            raise NotCleared("the request was never cleared")
        if pending.missing():
            raise NotCleared("the request's body was not cleared")
        # HTTP/2 and 3 clients may send a body without Content-Length; an HTTP/1.1 upstream then
        # needs one to find the body.
        body = flow.request.raw_content or b""
        if body and "content-length" not in flow.request.headers and "transfer-encoding" not in flow.request.headers:
            flow.request.headers["content-length"] = str(len(body))
        self._admit(flow, pending)

    def _admit(self, flow: http.HTTPFlow, pending: Pending) -> None:
        # Everything that can fail comes before the request is logged as allowed.
        if pending.headers:
            scrubber = self._scrubber_for(pending.secrets)
            # The agent only holds a placeholder: whatever it sent in these headers is replaced.
            for name, value in pending.headers.items():
                flow.request.headers[name] = value
            self.store.scrubbers[flow.id] = scrubber
        self.store.pending.pop(flow.id, None)
        self.store.admitted[flow.id] = pending.settings
        self.log.record("allow", route=pending.route, reason=pending.reason, once=pending.once, **pending.fields)
