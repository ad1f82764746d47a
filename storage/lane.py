"""A background thread that runs submitted calls in order.

SHA-256 (hashlib), ChaCha20-Poly1305 (cryptography) and file writes all
release the GIL, so hashing and writing in a lane overlaps them with the
encryption of the next segment on another core.  The queue is bounded, so a
slow lane applies back-pressure instead of buffering: memory stays flat.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

_STOP = None


class Lane:
    def __init__(self, depth: int = 16) -> None:
        self._queue: queue.Queue[tuple[Callable[..., Any], tuple[Any, ...]] | None] = queue.Queue(
            maxsize=depth
        )
        self._error: BaseException | None = None
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="storage-lane", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._queue.get()) is not _STOP:
            self._call(*item)
            del item  # while idle, hold no finished call: it may be the owner's bound method

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
        self._queue.put((call, args))

    def finish(self) -> None:
        """Wait until every submitted call ran; re-raise the first failure."""
        self.stop()
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            self._queue.put(_STOP)
            if threading.current_thread() is not self._thread:  # a finalizer may run in it
                self._thread.join()
