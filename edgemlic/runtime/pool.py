"""A small bounded pool: items made on demand, each lent to one thread at a time.

TensorRT execution contexts and OpenVINO infer requests are each usable by one thread at a time and
hold memory; a server with a thread per request must not make one per thread. The pool makes at most
`size`, and a thread that finds none free waits for one.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from edgemlic.errors import EdgemlicError

T = TypeVar("T")


class Pool(Generic[T]):
    def __init__(self, make: Callable[[], T], size: int) -> None:
        if size < 1:
            raise EdgemlicError(f"contexts {size} must be at least 1")
        self.size = size
        self._make = make
        self._free: queue.Queue[T] = queue.Queue()
        self._made = 0
        self._lock = threading.Lock()

    @property
    def made(self) -> int:
        return self._made

    def _take(self, block: bool) -> T | None:
        """A free item, a new one while fewer than `size` exist, else the next returned (or None)."""
        try:
            return self._free.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            create = self._made < self.size
            self._made += create
        if create:
            try:
                return self._make()
            except BaseException:
                with self._lock:
                    self._made -= 1
                raise
        return self._free.get() if block else None

    @contextlib.contextmanager
    def lease(self) -> Iterator[T]:
        item = self._take(block=True)
        try:
            yield item
        finally:
            self._free.put(item)

    @contextlib.contextmanager
    def lease_many(self, count: int) -> Iterator[list[T]]:
        """One item, waiting if need be, and up to `count - 1` more that are free now: never waits while
        holding one, so two threads asking for several cannot block each other."""
        items = [self._take(block=True)]
        while len(items) < count and (item := self._take(block=False)) is not None:
            items.append(item)
        try:
            yield items
        finally:
            for item in items:
                self._free.put(item)

    def drain(self) -> list[T]:
        """Every item made, once each has been returned; the pool is empty afterwards."""
        with self._lock:
            made, self._made = self._made, 0
        return [self._free.get() for _ in range(made)]
