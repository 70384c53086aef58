"""A small bounded pool: items made on demand, each lent to one thread at a time.

TensorRT execution contexts and OpenVINO infer requests are each usable by one thread at a time and
hold memory; a server with a thread per request must not make one per thread. The pool makes at most
`size`, and a thread that finds none free waits for one. One condition variable guards the count, the
free items and the closed flag, so every change a waiter could be waiting for (an item returned, a
failed make that frees a place, the pool closing) wakes it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from edgemlic.errors import EdgemlicError

T = TypeVar("T")


class Pool(Generic[T]):
    def __init__(self, make: Callable[[], T], size: int, label: str = "this backend") -> None:
        """`label` names what the pool serves in the error raised after `drain` ("model.engine")."""
        if size < 1:
            raise EdgemlicError(f"contexts {size} must be at least 1")
        self.size = size
        self.label = label
        self._make = make
        self._free: list[T] = []
        self._made = 0
        self._closed = False
        self._changed = threading.Condition()

    @property
    def made(self) -> int:
        return self._made

    def _take(self, block: bool) -> T | None:
        """A free item, a new one while fewer than `size` exist, else (blocking) the next one returned or
        a place freed by a failed make, or (not blocking) None."""
        with self._changed:
            while True:
                if self._closed:
                    raise EdgemlicError(f"{self.label} is closed; open it again to run inference")
                if self._free:
                    return self._free.pop()
                if self._made < self.size:
                    self._made += 1
                    break
                if not block:
                    return None
                self._changed.wait()
        try:
            return self._make()
        except BaseException:
            with self._changed:
                self._made -= 1
                self._changed.notify_all()  # a waiter may make one now (its own error if it fails too)
            raise

    def _give_back(self, items: list[T]) -> None:
        with self._changed:
            self._free.extend(items)
            self._changed.notify_all()

    @contextlib.contextmanager
    def lease(self) -> Iterator[T]:
        item = self._take(block=True)
        assert item is not None
        try:
            yield item
        finally:
            self._give_back([item])

    @contextlib.contextmanager
    def lease_many(self, count: int) -> Iterator[list[T]]:
        """One item, waiting if need be, and up to `count - 1` more that are free now: never waits while
        holding one, so two threads asking for several cannot block each other."""
        first = self._take(block=True)
        assert first is not None
        items = [first]
        try:
            while len(items) < count and (item := self._take(block=False)) is not None:
                items.append(item)
            yield items
        finally:
            self._give_back(items)

    def drain(self) -> list[T]:
        """Close the pool: every item made, once each lent one has been returned, on the first call (and an
        empty list after); threads waiting for an item, and every later lease, get the one-line error."""
        with self._changed:
            if self._closed:
                return []
            self._closed = True
            self._changed.notify_all()
            while len(self._free) < self._made:
                self._changed.wait()
            items, self._free, self._made = self._free, [], 0
        return items
