"""A failing destination or source stream is a system error, never a rejected file.

A donor must never read "your file is damaged" because the portal's disk was full or its
storage backend failed: such errors propagate unchanged for the caller to handle (retry,
507, alert), while what is wrong with the input is still a REJECTED outcome.
"""

from __future__ import annotations

import errno
import io

import pytest

from anonymize import Verdict, deidentify
from tests.anonymize.helpers import KEY, PSEUDONYM, ct_dataset, part10

SOURCE = part10(ct_dataset())


class QuotaExceeded(Exception):
    """What a storage library's writer might raise (anonymize knows nothing of it)."""


class FailingDestination(io.RawIOBase):
    """Accepts ``room`` bytes, then raises ``error`` on every write."""

    def __init__(self, room: int, error: BaseException) -> None:
        super().__init__()
        self.room = room
        self.error = error
        self.written = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[no-untyped-def, override]
        if len(self.written) + len(data) > self.room:
            raise self.error
        self.written += data
        return len(data)


class FailingSource(io.BytesIO):
    """The input's bytes, but reading past ``fail_at`` raises ``error`` (a disk, a network)."""

    def __init__(self, data: bytes, fail_at: int, error: BaseException) -> None:
        super().__init__(data)
        self.fail_at = fail_at
        self.error = error

    def read(self, size: int | None = -1) -> bytes:  # type: ignore[override]
        wanted = len(self.getbuffer()) - self.tell() if size is None or size < 0 else size
        if self.tell() + wanted > self.fail_at:
            raise self.error
        return super().read(size)


def _deidentify(src: io.IOBase, dst: io.IOBase):  # type: ignore[no-untyped-def]
    return deidentify(src, dst, key=KEY, pseudonym=PSEUDONYM)  # type: ignore[arg-type]


@pytest.mark.parametrize("room", [0, 200, len(SOURCE) - len(ct_dataset().PixelData)])
def test_a_full_disk_mid_write_raises_enospc(room: int) -> None:
    full = OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(OSError) as raised:
        _deidentify(io.BytesIO(SOURCE), FailingDestination(room, full))
    assert raised.value is full
    assert raised.value.errno == errno.ENOSPC


def test_a_custom_destination_error_propagates_unchanged() -> None:
    quota = QuotaExceeded("bucket quota reached")
    with pytest.raises(QuotaExceeded) as raised:
        _deidentify(io.BytesIO(SOURCE), FailingDestination(300, quota))
    assert raised.value is quota


@pytest.mark.parametrize("error", [MemoryError(), KeyboardInterrupt()])
def test_memory_and_interrupts_from_the_destination_propagate(error: BaseException) -> None:
    with pytest.raises(type(error)):
        _deidentify(io.BytesIO(SOURCE), FailingDestination(100, error))


def test_memory_error_anywhere_is_not_a_rejection(monkeypatch: pytest.MonkeyPatch) -> None:
    from anonymize import core

    def exhausted(*_args, **_kwargs):  # type: ignore[no-untyped-def]
        raise MemoryError

    monkeypatch.setattr(core.engine.Walker, "walk", exhausted)
    with pytest.raises(MemoryError):
        _deidentify(io.BytesIO(SOURCE), io.BytesIO())


def test_a_source_read_error_propagates_instead_of_truncated() -> None:
    broken = OSError(errno.EIO, "Input/output error")
    with pytest.raises(OSError) as raised:
        _deidentify(FailingSource(SOURCE, 0, broken), io.BytesIO())
    assert raised.value is broken


def test_a_large_source_failing_mid_read_propagates(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the in-memory limit the source is read lazily, through the parser and the
    pixel copy: its error must still come out as itself."""
    from anonymize import reader

    monkeypatch.setattr(reader, "SMALL_FILE", 0)
    for fail_at in (300, len(SOURCE) - 10):
        error = QuotaExceeded("the backend went away")
        with pytest.raises(QuotaExceeded):
            _deidentify(FailingSource(SOURCE, fail_at, error), io.BytesIO())


def test_a_truncated_input_is_still_rejected_as_truncated() -> None:
    out = io.BytesIO()
    outcome = _deidentify(io.BytesIO(SOURCE[:-100]), out)
    assert outcome.verdict is Verdict.REJECTED
    assert outcome.reason_code == "truncated"


def test_a_healthy_destination_still_gets_the_file() -> None:
    out = FailingDestination(10**9, AssertionError("never"))
    outcome = _deidentify(io.BytesIO(SOURCE), out)
    assert outcome.verdict is Verdict.DEIDENTIFIED
    assert bytes(out.written[128:132]) == b"DICM"
