"""The limits every server of the bundle that faces the agent keeps, and the bounded HTTP server
the stdlib daemons (the status daemon, the git gate) run their ``http.server`` handlers on.

An agent may open as many connections as it likes and send nothing, or half a request. Here such
a connection costs a file descriptor and no thread: one selector thread accepts connections and
reads each request head without blocking, bounded in time (``head_timeout``) and size; only a
connection whose whole head has arrived goes to one of a fixed number of worker threads, where
every read and write has a timeout (``read_timeout``). At the connection cap the connection that
has waited longest for its head is closed to make room, so a flood of idle connections never
locks out a client that sends its request at once. Supervise (uvicorn, asynchronous) applies the
same head timeout and cap in its own protocol class. Stdlib only.
"""

from __future__ import annotations

import contextlib
import io
import queue
import selectors
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Limits:
    """What one server spends on connections at most."""

    max_connections: int  # open at once: waiting for a head, waiting for a worker, or served
    workers: int  # threads running handlers (0: the server is asynchronous and runs none)
    head_timeout: float  # seconds from accept (or from the last answer) to a whole request head
    read_timeout: float  # seconds one read or write of a request being served may block
    max_head: int = 64 * 1024  # bytes of a request line and headers


STATUS_LIMITS = Limits(max_connections=512, workers=4, head_timeout=10.0, read_timeout=10.0)
# Pushes and clones stream packs for minutes; a read stalls for two at most.
GIT_GATE_LIMITS = Limits(max_connections=512, workers=8, head_timeout=10.0, read_timeout=120.0)
# Asynchronous (uvicorn): no threads; long-lived event streams are served after their head.
SUPERVISE_LIMITS = Limits(max_connections=512, workers=0, head_timeout=10.0, read_timeout=60.0)
# MCP sessions supervise keeps at once (about 40 KB each; the SDK's default, 10,000, would let an
# agent take 400 MB of the bundle's memory), each ended after the bottle's decision timeout idle.
SUPERVISE_MAX_SESSIONS = 256

_HEAD_ENDS = (b"\r\n\r\n", b"\n\n")


class _HeadFirst(io.RawIOBase):
    """A connection's bytes: first the head the selector already read, then the socket's."""

    def __init__(self, sock: socket.socket, head: bytes) -> None:
        self._sock, self._head = sock, head

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self._head:
            n = min(len(b), len(self._head))
            b[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        return self._sock.recv_into(b)


class _Connection:
    """The socket a handler is given: reads start with the head already read; all else is the socket's."""

    def __init__(self, sock: socket.socket, head: bytes) -> None:
        self._sock, self._head = sock, head

    def makefile(self, mode: str = "r", buffering: int | None = None, **kw: Any) -> Any:
        if "r" in mode:
            return io.BufferedReader(_HeadFirst(self._sock, self._head))
        return self._sock.makefile(mode, buffering, **kw)  # type: ignore[call-overload]  # mode is a str here, as http.server passes it

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class _Waiting:
    __slots__ = ("sock", "addr", "buf", "deadline")

    def __init__(self, sock: socket.socket, addr: Any, deadline: float) -> None:
        self.sock, self.addr, self.buf, self.deadline = sock, addr, bytearray(), deadline


class BoundedHTTPServer:
    """``http.server.ThreadingHTTPServer``'s interface (serve_forever, shutdown, server_close,
    server_address) with bounded threads, connections and time. Handlers are served one request
    per connection (HTTP/1.0, http.server's default)."""

    def __init__(self, address: tuple[str, int], handler_class: type, limits: Limits, *, name: str = "server") -> None:
        if limits.workers < 1:
            raise ValueError(f"{name}: a threaded server needs at least one worker")
        self.RequestHandlerClass = handler_class
        self.limits = limits
        self.name = name
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.socket = socket.create_server(address, family=family, backlog=128)
        self.server_address = self.socket.getsockname()[:2]
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])
        self._waiting: dict[socket.socket, _Waiting] = {}  # by accept time: oldest first
        self._open = 0  # waiting + queued + served
        self._open_lock = threading.Lock()
        self._ready: queue.Queue[tuple[socket.socket, Any, bytes] | None] = queue.Queue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self._stopped.set()  # not serving yet: shutdown() returns at once
        self._workers: list[threading.Thread] = []

    # --- the selector thread ------------------------------------------------------------------
    def serve_forever(self, poll_interval: float = 0.5) -> None:
        self._stopped.clear()
        self._workers = [
            threading.Thread(target=self._work, name=f"{self.name}-worker-{i}", daemon=True)
            for i in range(self.limits.workers)
        ]
        for t in self._workers:
            t.start()
        sel = selectors.DefaultSelector()
        self.socket.setblocking(False)
        sel.register(self.socket, selectors.EVENT_READ, "accept")
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                oldest = next(iter(self._waiting.values()), None)
                timeout = poll_interval if oldest is None else max(0.0, min(poll_interval, oldest.deadline - now))
                for key, _ in sel.select(timeout):
                    if key.data == "accept":
                        self._accept(sel)
                    elif key.data == "wake":
                        with contextlib.suppress(OSError):
                            self._wake_r.recv(64)
                    else:
                        self._read_head(sel, key.data)
                self._expire(sel, time.monotonic())
        finally:
            for w in list(self._waiting.values()):
                self._drop(sel, w)
            sel.close()
            for _ in self._workers:
                self._ready.put(None)
            self._stop.clear()
            self._stopped.set()

    def _accept(self, sel: selectors.BaseSelector) -> None:
        for _ in range(64):  # then let the waiting ones read
            try:
                sock, addr = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # out of descriptors, say: the listener stays, the client retries
                self._say(f"cannot accept a connection: {e}")
                return
            with self._open_lock:
                full = self._open >= self.limits.max_connections
                if not full:
                    self._open += 1
            if full:
                oldest = next(iter(self._waiting.values()), None)
                if oldest is None:  # every slot holds a request being served: this one must wait outside
                    sock.close()
                    continue
                self._drop(sel, oldest)  # frees a slot
                with self._open_lock:
                    self._open += 1
            sock.setblocking(False)
            w = _Waiting(sock, addr, time.monotonic() + self.limits.head_timeout)
            self._waiting[sock] = w
            sel.register(sock, selectors.EVENT_READ, w)

    def _read_head(self, sel: selectors.BaseSelector, w: _Waiting) -> None:
        try:
            data = w.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(sel, w)
            return
        start = max(0, len(w.buf) - 3)
        w.buf += data
        if not any(w.buf.find(end, start) >= 0 for end in _HEAD_ENDS):
            if len(w.buf) > self.limits.max_head:
                with contextlib.suppress(OSError):
                    w.sock.send(b"HTTP/1.0 431 Request Header Fields Too Large\r\nContent-Length: 0\r\n\r\n")
                self._drop(sel, w)
            return
        sel.unregister(w.sock)
        del self._waiting[w.sock]
        w.sock.setblocking(True)
        w.sock.settimeout(self.limits.read_timeout)
        self._ready.put((w.sock, w.addr, bytes(w.buf)))

    def _expire(self, sel: selectors.BaseSelector, now: float) -> None:
        while self._waiting:
            w = next(iter(self._waiting.values()))
            if w.deadline > now:
                return
            self._drop(sel, w)

    def _drop(self, sel: selectors.BaseSelector, w: _Waiting) -> None:
        with contextlib.suppress(KeyError, ValueError):
            sel.unregister(w.sock)
        self._waiting.pop(w.sock, None)
        w.sock.close()
        with self._open_lock:
            self._open -= 1

    # --- the workers --------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            item = self._ready.get()
            if item is None:
                return
            sock, addr, head = item
            try:
                self.RequestHandlerClass(_Connection(sock, head), addr, self)
            except Exception as e:
                self.handle_error(addr, e)
            finally:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_WR)
                sock.close()
                with self._open_lock:
                    self._open -= 1

    def handle_error(self, addr: Any, e: BaseException) -> None:
        if not isinstance(e, (ConnectionError, TimeoutError)):
            self._say(f"{addr[0] if addr else '?'}: {type(e).__name__}: {e}")

    def _say(self, msg: str) -> None:
        print(f"{self.name}: {msg}", file=sys.stderr, flush=True)

    # --- life ---------------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Stop serve_forever (from another thread) and wait for it to return."""
        self._stop.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        self._stopped.wait()

    def server_close(self) -> None:
        for s in (self.socket, self._wake_r, self._wake_w):
            s.close()

    @property
    def open_connections(self) -> int:
        with self._open_lock:
            return self._open
