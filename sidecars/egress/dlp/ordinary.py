"""What ordinary traffic carries that looks like a secret and is not one, judged by shape or by
exact public value, never by a name alone (a name is the agent's to choose):

- protocol nonces: ``Sec-WebSocket-Key`` is the base64 of 16 random bytes (RFC 6455), request
  ids and idempotency keys are UUIDs, ``traceparent`` is W3C's fixed shape; a header of that
  name whose value has exactly that shape holds no room for a secret;
- pagination tokens (``pageToken``, ``NextToken``, ``cursor``, ...) in a query: opaque values the
  upstream made, so gitleaks' generic rule (which fires on the word "token") does not judge
  them; every specific rule still does;
- well-known public sample values (jwt.io's sample tokens, Stripe's documented test keys), by
  exact value;
- a hex digest compared or named as one (``cache_key == "<sha256>"``, ``sha256: <hex>``) is not
  a generic API key.
"""

from __future__ import annotations

import re

_B64_16 = re.compile(r"[A-Za-z0-9+/]{21}[AQgw]==")
_UUID = re.compile(r"(?i)[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_HEX_ID = re.compile(r"(?i)[0-9a-f]{16}|[0-9a-f]{32}")
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
_ID_HEADERS = frozenset(
    {
        "idempotency-key",
        "x-idempotency-key",
        "x-request-id",
        "request-id",
        "x-correlation-id",
        "correlation-id",
        "x-client-request-id",
        "x-amz-sdk-invocation-id",
        "amz-sdk-invocation-id",
        "x-b3-traceid",
        "x-b3-spanid",
        "x-b3-parentspanid",
        "x-cloud-trace-context",
        "x-stainless-retry-id",
        "x-github-request-id",
        "x-ms-client-request-id",
    }
)


def nonce_header(name: str, value: str) -> bool:
    """A header whose value is a protocol nonce of its standard shape (nothing else fits)."""
    n = name.strip().lower()
    v = value.strip()
    if n == "sec-websocket-key":
        return _B64_16.fullmatch(v) is not None
    if n == "traceparent":
        return _TRACEPARENT.fullmatch(v) is not None
    if n in _ID_HEADERS:
        return _UUID.fullmatch(v) is not None or _HEX_ID.fullmatch(v) is not None
    return False


PAGINATION = frozenset(
    {
        "pagetoken",
        "nextpagetoken",
        "nexttoken",
        "next_token",
        "continuationtoken",
        "continuation-token",
        "continuation_token",
        "continuation",
        "cursor",
        "next_cursor",
        "nextcursor",
        "starting_after",
        "ending_before",
        "after",
        "before",
        "marker",
        "nextmarker",
        "next_marker",
        "page_token",
        "pagination_token",
        "paginationtoken",
        "start_cursor",
        "sync_token",
        "synctoken",
        "resumptiontoken",
        "key-marker",
        "upload-id-marker",
        "version-id-marker",
        "start-after",
        "exclusivestartkey",
    }
)


def pagination_param(name: str) -> bool:
    return name.strip().lower() in PAGINATION


# Public sample values, by exact value: they are printed in documentation for everyone.
PUBLIC_SAMPLES = frozenset(
    {
        # jwt.io's sample tokens (HS256), the old and the current one
        b"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
        b"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiYWRtaW4iOnRydWUsImlhdCI6MTUxNjIzOTAyMn0.KMUFsIDTnFmyG3nMiGM6H9FNFUROf3wh7SmqJp-QV30",
        # Stripe's documented test keys
        b"sk_test_4eC39HqLyjWDarjtT1zdp7dc",
        b"pk_test_TYooMQauvdEDq54NiTphI7jx",
        b"sk_test_BQokikJOvBiI2HlWgH4olfQ2",
        b"pk_test_6pRNASCoBOKtIshFeQd4XMUh",
        b"sk_test_26PHem9AhJZvU623DfE1x4sd",
    }
)


def public_sample(secret: bytes) -> bool:
    return secret in PUBLIC_SAMPLES or secret.strip(b"\"'") in PUBLIC_SAMPLES


_DIGEST = re.compile(rb"(?i)[0-9a-f]{32}|[0-9a-f]{40}|[0-9a-f]{56}|[0-9a-f]{64}|[0-9a-f]{96}|[0-9a-f]{128}")
_COMPARED = re.compile(
    rb"[!=]==?\s*[\"'`]?[0-9a-fA-F]+[\"'`]?\s*$|(?i:hash|sha\d*|md5|digest|checksum|etag|fingerprint|integrity)"
)


def digest_not_key(rule_id: str, secret: bytes, match: bytes) -> bool:
    """gitleaks' generic rule on a hex digest that the text compares or names as a digest."""
    return "generic" in rule_id and _DIGEST.fullmatch(secret) is not None and _COMPARED.search(match) is not None
