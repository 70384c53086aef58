"""The bounded pool behind TensorRT contexts and OpenVINO infer requests: the bound, waiters woken by
every change they wait for (a return, a failed make, closing), and no use after close.

Threads here are daemons joined with a timeout, so a regression fails the test instead of hanging it.
"""

from __future__ import annotations

import threading
import time

import pytest

from edgemlic.errors import EdgemlicError
from edgemlic.runtime.pool import Pool

TIMEOUT = 10


def start(target) -> tuple[threading.Thread, list]:
    """`target()` on a daemon thread; the list gets its result or its exception."""
    outcome: list = []

    def run():
        try:
            outcome.append(target())
        except Exception as e:  # checked by the test
            outcome.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def finished(thread: threading.Thread) -> bool:
    thread.join(timeout=TIMEOUT)
    return not thread.is_alive()


def test_contexts_are_bounded_however_many_threads_infer():
    """A thread-per-request server: 16 threads share at most 2 contexts, each used by one at a time."""
    made, in_use, peak, lock = [], set(), [0], threading.Lock()

    def make():
        made.append(object())
        return made[-1]

    pool = Pool(make, size=2)

    def request():
        for _ in range(5):
            with pool.lease() as context:
                with lock:
                    assert context not in in_use  # never lent to two threads at once
                    in_use.add(context)
                    peak[0] = max(peak[0], len(in_use))
                time.sleep(0.002)
                with lock:
                    in_use.remove(context)

    threads = [start(request)[0] for _ in range(16)]
    assert all(finished(thread) for thread in threads)
    assert len(made) == pool.made == 2 and peak[0] == 2
    assert sorted(map(id, pool.drain())) == sorted(map(id, made)) and pool.made == 0


def test_a_context_that_cannot_be_made_does_not_count():
    attempts = []

    def make():
        attempts.append(1)
        if len(attempts) == 1:
            raise EdgemlicError("out of GPU memory")
        return "context"

    pool = Pool(make, size=1)
    with pytest.raises(EdgemlicError, match="out of GPU memory"), pool.lease():
        pass
    with pool.lease() as context:
        assert context == "context" and pool.made == 1
    with pytest.raises(EdgemlicError, match="contexts 0 must be at least 1"):
        Pool(make, size=0)


@pytest.mark.parametrize("second_make", ["succeeds", "fails"])
def test_a_failed_make_wakes_the_thread_waiting_for_it(second_make):
    """Issue 18, defect 2: thread A makes the only context and fails while thread B waits for one. B must
    wake and make one itself: it gets a context, or its own error, and never blocks forever."""
    making, fail_now, calls = threading.Event(), threading.Event(), []

    def make():
        calls.append(threading.current_thread().name)
        if len(calls) == 1:
            making.set()
            fail_now.wait(TIMEOUT)
            raise EdgemlicError("out of GPU memory")
        if second_make == "fails":
            raise EdgemlicError("still out of GPU memory")
        return "context"

    pool = Pool(make, size=1)

    def lease_once():
        with pool.lease() as context:
            return context

    first, first_outcome = start(lease_once)
    assert making.wait(TIMEOUT)
    second, second_outcome = start(lease_once)
    time.sleep(0.05)  # B is now waiting: the one place is taken by A's make
    assert len(calls) == 1 and second.is_alive()
    fail_now.set()
    assert finished(first) and finished(second)
    assert str(first_outcome[0]) == "out of GPU memory"
    if second_make == "succeeds":
        assert second_outcome == ["context"] and pool.made == 1
    else:
        assert str(second_outcome[0]) == "still out of GPU memory" and pool.made == 0
    assert len(calls) == 2


def test_after_drain_every_lease_is_one_error_and_waiters_are_woken():
    """Issue 18, defect 3: drain closes the pool. It waits for lent items, returns each made item once,
    wakes threads waiting for one with the error, and nothing is made afterwards."""
    made = []
    pool = Pool(lambda: made.append(len(made)) or made[-1], size=1, label="model.engine")
    closed = "^model.engine is closed; open it again to run inference$"
    with pool.lease() as item:
        waiter, waiter_outcome = start(lambda: pool.lease().__enter__())
        drainer, drained = start(pool.drain)
        assert finished(waiter)  # woken by the drain, not left waiting for an item
        time.sleep(0.05)
        assert drainer.is_alive() and item == 0  # the drain waits for the item lent here
    assert finished(drainer)
    assert drained == [[0]] and isinstance(waiter_outcome[0], EdgemlicError)
    assert str(waiter_outcome[0]) == "model.engine is closed; open it again to run inference"
    assert pool.drain() == [] and pool.made == 0
    with pytest.raises(EdgemlicError, match=closed), pool.lease():
        pass
    with pytest.raises(EdgemlicError, match=closed), pool.lease_many(2):
        pass
    assert made == [0]
