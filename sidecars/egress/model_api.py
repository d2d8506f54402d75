"""The model's API is a way out too: a Messages API request can ask the provider's servers to
reach the internet for the agent (the MCP connector's ``mcp_servers``, server tools such as web
search, web fetch and code execution, and the ``anthropic-beta`` flags that turn them on). On any
route, a POST to the Messages API is parsed structurally (its ``tools``, ``mcp_servers`` and
betas only: no DLP runs on the conversation) and refused unless the route's ``model_tools``
names each such tool. The 403 is in the API's own error shape, so claude shows its message, and
the log line carries the draft supervise can offer the operator (a ``model-tool`` proposal).
"""

from __future__ import annotations

import json
import re
from typing import Any

from decisions import DecisionLog
from failclosed import REQUEST, guarded
from mitmproxy import http
from policy_store import MODEL_API, Pending, PolicyStore
from request_target import routed_path

# The Messages API's endpoints that take tools (count_tokens takes the same body; a batch holds
# many such bodies under requests[].params), matched on the path as a lenient server routes it.
MESSAGES_PATH = re.compile(r"^/v1/messages(/count_tokens|/batches)?$")
# Tool types the client runs itself (Anthropic-defined, but executed by the agent's own tools,
# whose traffic goes through egress like any other). Any other `type` is a server tool.
CLIENT_TOOL_TYPES = ("custom",)
CLIENT_TOOL_PREFIXES = ("bash_", "text_editor_", "computer_", "memory_")
# Server tool types (and beta flags) by the model_tools name that allows them.
SERVER_TOOL_PREFIXES = (
    ("web_search", "web_search"),
    ("web_fetch", "web_fetch"),
    ("code_execution", "code_execution"),
    ("mcp_toolset", "mcp_servers"),
)
BETA_PREFIXES = (
    ("mcp-client-", "mcp_servers"),
    ("web-fetch-", "web_fetch"),
    ("web-search-", "web_search"),
    ("code-execution-", "code_execution"),
    ("skills-", "code_execution"),
)


def is_messages_request(method: str, path: str) -> bool:
    return method.upper() == "POST" and bool(MESSAGES_PATH.match(routed_path(path)))


def _tool_of_type(kind: Any) -> str | None:
    """The model_tools name of a server tool's type; None for a server tool of no known kind."""
    if isinstance(kind, str):
        for prefix, tool in SERVER_TOOL_PREFIXES:
            if kind.startswith(prefix):
                return tool
    return None


def beta_tools(values: list[str]) -> list[tuple[str, str | None]]:
    """(label, tool) for each beta flag that turns a server-side tool on."""
    out = []
    flags = [f.strip().lower() for v in values for f in v.split(",") if f.strip()]
    for i, flag in enumerate(flags):
        for prefix, tool in BETA_PREFIXES:
            if flag.startswith(prefix):
                out.append((f"anthropic-beta[{i}]", tool))
    return out


def body_tools(doc: Any, where: str = "") -> list[tuple[str, str | None]]:
    """(label, tool) for each thing in a Messages API body that reaches out from the provider:
    labels are key names and indexes (``tools[2]``), never the agent's text; tool None is a
    server tool of a kind no route can allow."""
    if not isinstance(doc, dict):
        raise ValueError("the body is not a JSON object")
    out: list[tuple[str, str | None]] = []
    if doc.get("mcp_servers"):
        out.append((f"{where}mcp_servers", "mcp_servers"))
    tools = doc.get("tools") or []
    if not isinstance(tools, list):
        raise ValueError("tools is not a list")
    for i, t in enumerate(tools):
        if not isinstance(t, dict):
            raise ValueError("a tool is not an object")
        kind = t.get("type")
        if (
            kind is None
            or kind in CLIENT_TOOL_TYPES
            or (isinstance(kind, str) and kind.startswith(CLIENT_TOOL_PREFIXES))
        ):
            continue
        out.append((f"{where}tools[{i}]", _tool_of_type(kind)))
    for i, r in enumerate(doc.get("requests") or [] if where == "" else []):  # a message batch
        if isinstance(r, dict):
            out += body_tools(r.get("params"), f"requests[{i}].params.")
    return out


class ModelApiGuard:
    def __init__(self, store: PolicyStore, log: DecisionLog):
        self.store = store
        self.log = log

    def _refuse(
        self, flow: http.HTTPFlow, pending: Pending, found: list[tuple[str, str | None]], *, body_read: bool
    ) -> None:
        route = self.store.policy.routes[pending.route]
        label, tool = next(((w, t) for w, t in found if t is None or t not in route.model_tools))
        if tool is None:
            reason = f"a server tool of an unknown kind ({label}) is not allowed on any route"
            proposal = None
        else:
            reason = f"model tool {tool} ({label}) is not allowed on route {pending.route} ({route.host}): its model_tools do not name it"
            proposal = {"kind": "model-tool", "change": {"host": route.host, "tool": tool}}
        message = (
            f"egress: blocked: {reason}. The provider's servers would reach the internet for the agent; "
            f"the operator can allow it (bottle {self.store.bottle})."
        )
        body = json.dumps({"type": "error", "error": {"type": "permission_error", "message": message}})
        self.log.block(
            flow,
            reason,
            body + "\n",
            pending.fields,
            route=pending.route,
            body_read=body_read,
            content_type="application/json",
            model_tool={"tool": tool, "where": label},
            proposal=proposal,
        )

    def _allowed(self, pending: Pending, found: list[tuple[str, str | None]]) -> bool:
        tools = self.store.policy.routes[pending.route].model_tools
        return all(t is not None and t in tools for _, t in found)

    @guarded("model api", REQUEST)
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        pending = self.store.pending.get(flow.id)
        req = flow.request
        if pending is None or not is_messages_request(req.method, req.path):
            return
        found = beta_tools(req.headers.get_all("anthropic-beta"))
        if found and not self._allowed(pending, found):
            return self._refuse(flow, pending, found, body_read=False)
        limit = pending.settings.max_body_bytes
        length = req.headers.get("content-length", "")
        if "transfer-encoding" not in req.headers and length.isdigit() and int(length) > limit:
            reason = f"a Messages API body of {length} bytes is over the {limit}-byte cap egress reads it to"
            return self.log.block(flow, reason, f"egress: blocked: {reason}\n", pending.fields, route=pending.route)
        pending.required.add(MODEL_API)  # the body is buffered and read below

    @guarded("model api", REQUEST)
    def request(self, flow: http.HTTPFlow) -> None:
        pending = self.store.pending.get(flow.id)
        if pending is None or MODEL_API not in pending.required:
            return
        raw = flow.request.get_content(strict=True) or b"{}"  # content-encoding undone; ValueError fails closed
        if len(raw) > pending.settings.max_body_bytes:
            raise ValueError("the decoded body is over the cap")
        doc = json.loads(raw)
        found = body_tools(doc)
        model = doc.get("model")
        pending.model = model[:200] if isinstance(model, str) else None  # metering's, for errors
        if found and not self._allowed(pending, found):
            return self._refuse(flow, pending, found, body_read=True)
        pending.cleared.add(MODEL_API)
