"""The order requests compute in when they share one activation arena: arrival order.

With a shared arena the loader runs one inference at a time (on a CPU one already takes every
core). A plain lock wakes whichever waiter the scheduler picks, so under load a request can wait
behind any number of later ones. Requests take the run lock here in the order they asked for
it. What they wait for first is outside it: a miss reads its weights before it queues (`bulk`,
or `interleaved` until the rest of the read fits its inference), so a request for a resident
bundle that arrives meanwhile computes first. That is Masa's admission on a CPU: the requests
that can run now go ahead of one still loading, and none is passed over once it is ready.
"""

from __future__ import annotations

import threading
from collections import deque
from types import TracebackType


class RunQueue:
    """A lock granted in the order it was asked for."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._waiting: deque[object] = deque()
        self._held = False

    def __enter__(self) -> RunQueue:
        ticket = object()
        with self._condition:
            self._waiting.append(ticket)
            while self._held or self._waiting[0] is not ticket:
                self._condition.wait()
            self._waiting.popleft()
            self._held = True
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        with self._condition:
            self._held = False
            self._condition.notify_all()
