"""Requests that share the activation arena compute one at a time, in the order they queued."""

from __future__ import annotations

import threading
import time

from fusedinf_cc.runtime.run_queue import RunQueue


def test_waiters_are_granted_the_lock_in_the_order_they_asked():
    queue = RunQueue()
    order: list[int] = []
    queued = []

    def request(index: int) -> None:
        with queue:
            order.append(index)

    with queue:  # held: every request below queues
        for index in range(8):
            thread = threading.Thread(target=request, args=(index,))
            thread.start()
            queued.append(thread)
            deadline = time.monotonic() + 5
            while len(queue._waiting) < index + 1 and time.monotonic() < deadline:
                time.sleep(0.001)  # the next one asks only after this one waits
    for thread in queued:
        thread.join(timeout=5)
    assert order == list(range(8))


def test_one_holder_at_a_time_and_an_error_lets_the_next_in():
    queue = RunQueue()
    inside, most = [0], [0]

    def request() -> None:
        try:
            with queue:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
                time.sleep(0.001)
                inside[0] -= 1
                raise RuntimeError("a failed inference")
        except RuntimeError:
            pass

    threads = [threading.Thread(target=request) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert most[0] == 1 and not queue._held and not queue._waiting


def test_a_holder_that_asks_again_goes_behind_those_already_waiting():
    """A plain lock lets the thread that releases it take it straight back; the queue does
    not: one request cannot starve the others by asking again at once."""
    queue = RunQueue()
    order: list[str] = []

    def request(name: str) -> None:
        with queue:
            order.append(name)

    queue.__enter__()
    waiters = []
    for name in ("b", "c"):
        thread = threading.Thread(target=request, args=(name,))
        thread.start()
        waiters.append(thread)
        deadline = time.monotonic() + 5
        while len(queue._waiting) < len(waiters) and time.monotonic() < deadline:
            time.sleep(0.001)
    queue.__exit__(None, None, None)
    request("a")  # at once, while b and c wait to be woken
    for thread in waiters:
        thread.join(timeout=5)
    assert order == ["b", "c", "a"]
