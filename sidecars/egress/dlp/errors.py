"""The one error a decoder or parser may raise: the data cannot be scanned (and so is blocked)."""


class CannotScan(Exception):
    """The body cannot be turned into text to scan; the message says why (no secret in it)."""
