"""uvicorn's HTTP/1.1 protocol with the limits a server facing the open network needs.

uvicorn times out idle keep-alive connections but not a client that never finishes its request
head: 200 such connections held a server's file descriptors until health checks timed out.
Here a connection must send a whole request head within `header_timeout_s`, and at most
`max_connections` are open at once; at the limit, the connection that has waited longest for
its head is closed to let the newcomer in, so health checks and real clients, which send their
heads at once, keep being answered. A request it cannot parse is answered in JSON.
"""

from __future__ import annotations

import json
import logging
import resource
import time
from collections import OrderedDict
from typing import Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

DEFAULT_HEADER_TIMEOUT_S = 10.0
# File descriptors left to the process itself (model files, sessions, pipes) below its limit.
_RESERVED_FDS = 64


def default_max_connections() -> int:
    """Half of what the process may open, less a reserve; never more than 1024."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1024
    return max(8, min(1024, (soft - _RESERVED_FDS) // 2))


class GuardedH11Protocol(H11Protocol):
    header_timeout_s = DEFAULT_HEADER_TIMEOUT_S
    max_connections = default_max_connections()
    # Connections still waiting for a request head, oldest first (one event loop per process).
    _waiting: ClassVar[OrderedDict[GuardedH11Protocol, None]] = OrderedDict()

    @classmethod
    def configure(cls, header_timeout_s: float, max_connections: int | None) -> None:
        cls.header_timeout_s = header_timeout_s
        cls.max_connections = max_connections or default_max_connections()

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            stalest = next(iter(self._waiting), None)
            if stalest is None:  # every connection is busy with a request: refuse the newcomer
                self.transport.close()
                return
            stalest._close_waiting()
        self._await_head()

    def _await_head(self) -> None:
        self._head_deadline = time.monotonic() + self.header_timeout_s
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)
        self._waiting[self] = None

    def _head_arrived(self) -> None:
        timer = getattr(self, "_head_timer", None)
        if timer is not None:
            timer.cancel()
            self._head_timer = None
        self._waiting.pop(self, None)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._waiting_for_head():
            self._close_waiting()

    def _waiting_for_head(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _close_waiting(self) -> None:
        self._head_arrived()
        if not self.transport.is_closing():
            self.transport.close()

    def handle_events(self) -> None:
        super().handle_events()
        if not self._waiting_for_head():
            self._head_arrived()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._head_arrived()
            self._await_head()  # the next request on this connection has as long

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_arrived()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        """A request uvicorn cannot parse (a malformed Content-Length, a broken head) is
        answered in JSON like every other client error, not in uvicorn's plain text."""
        body = json.dumps({"error": f"malformed HTTP request: {msg}"}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        self.transport.write(self.conn.send(h11.Response(status_code=400, headers=headers)))
        self.transport.write(self.conn.send(h11.Data(data=body)))
        self.transport.write(self.conn.send(h11.EndOfMessage()))
        self.transport.close()


class OncePerMinute(logging.Filter):
    """Lets each distinct message through once a minute: an error a flood of clients causes
    (too many open files, say) is logged, not written 162 MB deep."""

    def __init__(self) -> None:
        super().__init__()
        self._last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = f"{record.name}:{record.msg}"
        now = time.monotonic()
        if now - self._last.get(key, -60.0) < 60.0:
            return False
        self._last[key] = now
        record.exc_info = None  # one line, not a traceback per occurrence
        record.exc_text = None
        return True


def quiet_repeats() -> None:
    once = OncePerMinute()
    for name in ("asyncio", "uvicorn.error", "fusedinf_cc.serve"):
        logging.getLogger(name).addFilter(once)
