"""An incremental reader of ``text/event-stream`` bodies (the WHATWG rules for lines and fields):
fed the body in whatever chunks the network gives, it hands back each complete event's name and
data. It reads only: the stream itself passes on untouched, and nothing it is fed can make it
raise or hold memory beyond its caps (an event past MAX_EVENT is dropped, not kept)."""

from __future__ import annotations

from collections.abc import Iterator

MAX_EVENT = 1 << 20  # bytes of one event's lines; a longer event is skipped whole
MAX_LINE = MAX_EVENT


class SseReader:
    def __init__(self, max_event: int = MAX_EVENT) -> None:
        self.max_event = max_event
        self._partial = b""  # an unterminated line
        self._cr = False  # the last chunk ended in CR: an LF opening the next one is its pair
        self._event = b""
        self._data: list[bytes] = []
        self._size = 0
        self._skipping = False  # this event grew past max_event: ignore it up to its end
        self.dropped = 0  # events skipped for their size

    def feed(self, chunk: bytes) -> Iterator[tuple[str, bytes]]:
        """The events ``chunk`` completes, as (event name, data); b"" ends the stream (an event
        that never got its blank line is dropped, as the standard says)."""
        if not chunk:
            self._partial, self._event, self._data, self._size, self._skipping = b"", b"", [], 0, False
            return
        if self._cr and chunk[:1] == b"\n":
            chunk = chunk[1:]
        self._cr = chunk.endswith(b"\r")
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = chunk.split(b"\n")
        if self._partial:
            lines[0] = self._partial + lines[0]
        self._partial = lines.pop()
        if len(self._partial) > MAX_LINE:
            self._partial = b""
            self._skipping = True
        for line in lines:
            if not line:
                if self._data and not self._skipping:
                    yield (self._event or b"message").decode("utf-8", "replace"), b"\n".join(self._data)
                self._event, self._data, self._size, self._skipping = b"", [], 0, False
                continue
            if self._skipping:
                continue
            self._size += len(line)
            if self._size > self.max_event:
                self._skipping, self._data = True, []
                self.dropped += 1
                continue
            name, colon, value = line.partition(b":")
            if not colon:
                value = b""
            elif value[:1] == b" ":
                value = value[1:]
            if name == b"data":
                self._data.append(value)
            elif name == b"event":
                self._event = value
            # id, retry, comments (an empty name) and unknown fields do not matter here
