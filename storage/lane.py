"""A background thread that runs submitted calls in order.

SHA-256 (hashlib), ChaCha20-Poly1305 (cryptography's ``encrypt``; not
``encrypt_into``, which keeps the GIL) and file writes all release the GIL,
so hashing and writing in a lane overlaps them with the encryption of the
next segment on another core.  The queue is bounded, so a slow lane applies
back-pressure instead of buffering: memory stays flat.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

_STOP = None


class _Cancelled(Exception):
    """Set as the lane's error by :meth:`Lane.cancel`: later calls are skipped."""


class Lane:
    """Runs ``submit``-ted calls in order on its own thread, at most ``depth`` queued.

    Both queues are ``queue.SimpleQueue`` (implemented in C): a hand-off costs
    a few microseconds and little time holding the GIL, unlike ``queue.Queue``
    whose Python-level conditions showed up in profiles of a put.  The second
    queue holds the free places: ``submit`` takes one (waiting, outside the GIL,
    while the lane is ``depth`` calls behind) and the lane gives it back.
    """

    def __init__(self, depth: int = 16) -> None:
        self._work: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...]] | None] = (
            queue.SimpleQueue()
        )
        self._room: queue.SimpleQueue[None] = queue.SimpleQueue()
        for _ in range(depth):
            self._room.put(None)
        self._error: BaseException | None = None
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="storage-lane", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._work.get()) is not _STOP:
            self._call(*item)
            del item  # while idle, hold no finished call: it may be the owner's bound method
            self._room.put(None)

    def _call(self, call: Callable[..., Any], args: tuple[Any, ...]) -> None:
        if self._error is None:
            try:
                call(*args)
            except BaseException as exc:  # re-raised in the submitting thread
                self._error = exc

    def submit(self, call: Callable[..., Any], *args: Any) -> None:
        if self._stopped:
            raise RuntimeError("lane already stopped")
        if self._error is not None:
            raise self._error
        self._room.get()
        self._work.put((call, args))

    def finish(self) -> None:
        """Wait until every submitted call ran; re-raise the first failure."""
        self.stop()
        if self._error is not None:
            raise self._error

    def cancel(self) -> None:
        """Skip the calls still queued (their owner gave up), then stop."""
        if self._error is None:
            self._error = _Cancelled()
        self.stop()

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            self._work.put(_STOP)
            if threading.current_thread() is not self._thread:  # a finalizer may run in it
                self._thread.join()
