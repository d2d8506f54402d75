"""egress's one decision log (requests.jsonl) and the answers that go with a decision: every
addon that allows, blocks or fails a request records it here, in one line per decision.

A line carries what the request was (method, scheme, host, port, path without its query), the
route, the reason and, where DLP decided, the rule ids and fixed labels of where they matched:
never a secret, never text the agent chose as a label.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from mitmproxy import http
from policy_store import PolicyStore

from bottle_contract import layout
from bottle_contract.clock import now_iso
from bottle_contract.files import append_line

logger = logging.getLogger("egress")

LOG_MAX_BYTES = layout.REQUESTS_LOG_CAP.max_bytes
LOG_KEEP = layout.REQUESTS_LOG_CAP.keep
# A blocked request whose body may be larger than this is refused before its body is read.
BLOCKED_BODY_READ_LIMIT = 64 << 10
# Blocked requests that still carry a body are pointed at a name under this suffix, which
# server_connect refuses: mitmproxy then answers at once and drops the body unread.
REFUSED_SUFFIX = ".refused.egress.invalid"


def declared_length(req: http.Request) -> int | None:
    """The body length the request declares (0 for none); None when it is unknown (chunked, or an
    HTTP/2 or 3 request without Content-Length)."""
    if "transfer-encoding" in req.headers:
        return None
    length = req.headers.get("content-length")
    if length is not None:
        return int(length) if length.strip().isdigit() else None
    return None if (req.is_http2 or req.is_http3) else 0


def body_within(req: http.Request, limit: int) -> bool:
    length = declared_length(req)
    return length is not None and length <= limit


def flow_fields(req: http.Request) -> dict[str, Any]:
    """What a log line says the request was; the query may carry secrets: never logged."""
    path = req.path.split("?", 1)[0] or "/"
    return dict(method=req.method, scheme=req.scheme, host=req.host, port=req.port, path=path)


class DecisionLog:
    def __init__(self, store: PolicyStore, max_bytes: int = LOG_MAX_BYTES):
        self.store = store
        self.max_bytes = max_bytes

    def record(
        self,
        decision: str,
        *,
        method: str,
        scheme: str,
        host: str,
        port: int,
        path: str,
        route: int | None,
        reason: str,
        dlp: dict | None = None,
        once: str | None = None,
        **extra: Any,
    ) -> None:
        entry: dict[str, Any] = {
            "ts": now_iso(),
            "decision": decision,
            "method": method,
            "scheme": scheme,
            "host": host,
            "port": port,
            "path": path,
            "route": route,
            "reason": reason,
        }
        if dlp is not None:
            entry["dlp"] = dlp  # rule ids and where they matched, never the secret
        if once is not None:
            entry["once"] = once  # the proposal whose once-only route this request used
        if self.store.workers > 1:
            entry["worker"] = self.store.worker  # which of the bundle's egress workers decided
        entry.update(extra)
        line = json.dumps(entry)
        # One O_APPEND write per line (the workers never interleave theirs), rotated at the cap
        # under the workers' lock; a file the host rotated away is recreated.
        try:
            append_line(
                self.store.log_path,
                line.encode(),
                max_bytes=self.max_bytes,
                keep=LOG_KEEP,
                mode=0o644,
                lock=self.store.log_lock,
            )
        except (OSError, ValueError) as e:
            # The decision stands either way; a full or read-only state dir must not turn into
            # an exception halfway through a hook.
            logger.warning(f"egress: cannot append to {self.store.log_path}: {e}")

    # answers -----------------------------------------------------------------------------------
    def block(
        self,
        flow: http.HTTPFlow,
        reason: str,
        body: str,
        fields: dict,
        *,
        status: int = 403,
        decision: str = "block",
        route: int | None = None,
        dlp: dict | None = None,
        body_read: bool = False,
        content_type: str = "text/plain",
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        """Answer ``flow`` with ``status`` and ``body`` (never reading a large body) and log it."""
        self.store.pending.pop(flow.id, None)
        label = "blocked" if status == 403 else "error"
        response = http.Response.make(
            status, body.encode(), {"Content-Type": content_type, "X-Egress-Decision": label, **(headers or {})}
        )
        self.record(decision, route=route, reason=reason, dlp=dlp, **fields, **extra)
        flow.request.stream = False
        if body_read or body_within(flow.request, BLOCKED_BODY_READ_LIMIT):
            flow.response = response
            return
        # A body that may be large: never read it. mitmproxy streams a request only after a
        # connection to its destination opens, so the request is pointed at a name that
        # server_connect refuses; mitmproxy then answers with its own error page (status 502,
        # carrying this message) and drops the body. A request that turns out to have no body
        # reaches request() instead, which answers with the response above.
        self.store.refusals[flow.id] = response
        flow.request.headers.pop("expect", None)  # do not invite the body with 100 Continue
        flow.request.host = f"{flow.id}{REFUSED_SUFFIX}"
        flow.request.stream = True

    def dlp_block(
        self, flow: http.HTTPFlow, verdict: Any, fields: dict, route: int | None, *, body_read: bool = False
    ) -> None:
        """403 with the rule and where it was found (never the secret), and a JSON line with them.
        Neither names the path when a secret was found in it."""
        if any(h.where.startswith("url") for h in verdict.hits):
            fields = {**fields, "path": "[path withheld: DLP found a secret in it]"}
        target = f"{fields['method']} {fields['host']}:{fields['port']}"
        self.block(
            flow,
            verdict.reason(),
            f"{verdict.reason()} ({target}, bottle {self.store.bottle})\n",
            fields,
            route=route,
            dlp=verdict.to_json(),
            body_read=body_read,
        )
