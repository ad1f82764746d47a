"""A withdrawal (erase) racing a running ingest job, each on its own database connection.

The job runs the workers' use case (``run_ingest_job``) in a thread of this process; the
withdrawal (``workflows.withdrawal.withdraw``, mode erase) runs on a session of its own. The
test only *pauses* the job at a chosen point (a threading.Event); nothing of either side's
logic is replaced.

Lock order, as observed in (b) and documented in ``workflows.uploads``: both sides take the
**consent row first**. The ingest job's final step (``ingest._record``) locks the consent
row, then the upload row, then writes the file row, the stored object and the audit entry;
the withdrawal locks the consent row(s), then the consent's file rows, then the live
uploads (``uploads.cancel_for_consents``), then shreds the scope key. A withdrawal that
arrives while the job holds the consent row waits for the job's commit, then sees (and
erases) what the job stored; neither can hold a lock the other takes first, so they never
deadlock. On SQLite the same serialisation comes from ``BEGIN IMMEDIATE`` (one writer).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event, text

import consent
from donation_portal.adapters.models import StoredObject
from donation_portal.workflows import ingest, withdrawal
from storage.concat import ConcatenatedReader

from .conftest import Portal
from .dicom import multiframe_bytes
from .http import Tus

WAIT_SECONDS = 20.0
CONSENT_LOCK = re.compile(r"^SELECT consents\.id FROM consents WHERE consents\.id = ")
UPLOAD_SELECT = re.compile(r"^SELECT uploads\..* FROM uploads WHERE uploads\.id = ")
# the in-process app's jobs go to the embedded broker (kombu's SQLAlchemy transport)
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")


def _queued_upload(portal: Portal) -> str:
    """A donor's complete tus upload (through an in-process app's routes), waiting for its job."""
    content = multiframe_bytes(2)
    tus = Tus(portal.in_process_client())
    created = tus.create(len(content))
    assert created.status == 201, created.text
    url = created.headers["location"]
    done = tus.patch(url, 0, content)
    assert done.status == 204, done.text
    upload_id = url.rsplit("/", 1)[1]
    assert portal.upload(upload_id).state == "queued"
    return upload_id


class Background(threading.Thread):
    """A call in a thread; its result or exception kept for the test."""

    def __init__(self, name: str, call: Any) -> None:
        super().__init__(name=name, daemon=True)
        self._call = call
        self.result: Any = None
        self.error: BaseException | None = None
        self.finished_at: float | None = None

    def run(self) -> None:
        try:
            self.result = self._call()
        except BaseException as error:  # noqa: BLE001 - reported by outcome()
            self.error = error
        finally:
            self.finished_at = time.monotonic()

    def outcome(self) -> Any:
        self.join(WAIT_SECONDS)
        assert not self.is_alive(), f"{self.name} did not finish within {WAIT_SECONDS:.0f} s"
        if self.error is not None:
            raise self.error
        return self.result


def _withdraw(portal: Portal, consent_id: str) -> withdrawal.WithdrawalResult:
    with portal.sessions() as session:
        result = withdrawal.withdraw(session, consent_id, portal.store(session), mode=consent.ERASE)
        session.commit()  # withdraw() commits its unit of work; this only ends the session
        return result


def _wait(event_: threading.Event, what: str) -> None:
    assert event_.wait(WAIT_SECONDS), f"timed out waiting for {what}"


def test_withdrawal_committed_while_the_job_deidentifies_stores_nothing(
    portal: Portal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(a) The job has claimed the upload and is reading the decrypted parts (paused at its
    first read while writing the output) when an erase withdrawal commits on its own
    connection. Released, the job finishes de-identifying, finds the upload cancelled under
    its locks, and deletes what it wrote: no stored object, no row pointing at one, no key,
    nothing in storage (neither parts nor output nor a partial write)."""
    upload_id = _queued_upload(portal)
    consent_id = portal.consent_id()
    reading, resume = threading.Event(), threading.Event()

    class PausingReader(ConcatenatedReader):
        """Pauses at its second read: the first is the job's look at the file type (is it a
        ZIP archive?), the second is de-identifying's, with the output being written."""

        reads = 0

        def readinto(self, buffer: Any) -> int:
            count = super().readinto(buffer)
            self.reads += 1
            if self.reads == 2 and not reading.is_set():
                reading.set()
                resume.wait(WAIT_SECONDS)
            return count

    monkeypatch.setattr(ingest, "ConcatenatedReader", PausingReader)
    job = Background("ingest job", lambda: portal.run_ingest(upload_id))
    job.start()
    try:
        _wait(reading, "the job to start de-identifying")
        assert portal.upload(upload_id).state == "processing"
        assert portal.partial_writes(), "the job's output is not being written"
        result = _withdraw(portal, consent_id)
        assert result.mode == consent.ERASE and result.erased_files == 0
    finally:
        resume.set()
    assert job.outcome() == "cancelled"
    upload = portal.upload(upload_id)
    assert upload.state == "cancelled"
    (row,) = portal.files()
    assert (row.status, row.object_id) == ("cancelled", None)
    assert portal.stored_objects() == []
    assert portal.objects_in_storage() == set(), "the job's output (or a part) was left behind"
    assert portal.partial_writes() == []
    assert not portal.has_key(consent_id), "the consent's key outlived the erasure"
    assert not portal.has_key(upload.scope_id), "the quarantine key outlived the withdrawal"


@contextmanager
def _pause_after_the_consent_lock(portal: Portal) -> Iterator[dict[str, Any]]:
    """Pause the job's connection right after its final step locked the consent row; record
    the job's statements (in order) to show the lock order."""
    state: dict[str, Any] = {
        "locked": threading.Event(),
        "resume": threading.Event(),
        "statements": [],
        "thread": None,
    }

    def after(_conn, _cursor, statement, _params, _context, _many) -> None:  # type: ignore[no-untyped-def]
        if threading.current_thread() is not state["thread"]:
            return
        flat = " ".join(statement.split())
        state["statements"].append(flat)
        if CONSENT_LOCK.match(flat) and not state["locked"].is_set():
            state["locked"].set()
            state["resume"].wait(WAIT_SECONDS)

    event.listen(portal.engine, "after_cursor_execute", after)
    try:
        yield state
    finally:
        state["resume"].set()
        event.remove(portal.engine, "after_cursor_execute", after)


def _assert_consent_then_upload(portal: Portal, statements: list[str]) -> None:
    """The job's final step: the consent row's lock, then the upload row's (FOR UPDATE on
    PostgreSQL; SQLite has no row locks and already holds the database's write lock)."""
    consent_lock = next(i for i, s in enumerate(statements) if CONSENT_LOCK.match(s))
    after = [s for s in statements[consent_lock + 1 :] if UPLOAD_SELECT.match(s)]
    assert after, ("the job's final step never read the upload row", statements)
    if portal.kind == "postgresql":
        assert statements[consent_lock].endswith("FOR UPDATE"), statements[consent_lock]
        assert after[0].endswith("FOR UPDATE"), after[0]
    before = [s for s in statements[:consent_lock] if UPLOAD_SELECT.match(s)]
    assert before, "the claim (first step) locks the upload row alone, before"


def _waiting_on_a_lock(portal: Portal) -> list[str]:
    """PostgreSQL: the queries of this database's backends that wait for a row lock."""
    with portal.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT query FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'"
            )
        )
        return [" ".join(row.query.split()) for row in rows]


def test_withdrawal_waits_for_the_job_holding_the_consent_lock_then_erases_its_file(
    portal: Portal,
) -> None:
    """(b) The job's final step has locked the consent row (paused right after that
    statement) when the erase withdrawal starts in another thread: the withdrawal blocks on
    the same consent row (PostgreSQL: its backend waits for a row lock on ``consents``;
    SQLite: its ``BEGIN IMMEDIATE`` waits). Released, the job locks the upload row, stores
    the file and commits; only then does the withdrawal go on, and it erases the file the
    job stored: the object is deleted, its row gone, the consent's key destroyed."""
    upload_id = _queued_upload(portal)
    consent_id = portal.consent_id()
    with _pause_after_the_consent_lock(portal) as pause:
        job = Background("ingest job", lambda: portal.run_ingest(upload_id))
        pause["thread"] = job
        job.start()
        _wait(pause["locked"], "the job to lock the consent row")
        gone = Background("withdrawal", lambda: _withdraw(portal, consent_id))
        gone.start()
        if portal.kind == "postgresql":
            deadline = time.monotonic() + WAIT_SECONDS
            waiting: list[str] = []
            while not any("FROM consents" in q and "FOR UPDATE" in q for q in waiting):
                assert time.monotonic() < deadline, f"the withdrawal never waited: {waiting}"
                assert gone.is_alive(), "the withdrawal ended while the job held the lock"
                time.sleep(0.05)
                waiting = _waiting_on_a_lock(portal)
        else:
            time.sleep(1.0)
        assert gone.is_alive(), "the withdrawal did not wait for the job's lock"
        assert portal.stored_objects() == [], "the job committed before it was released"
        pause["resume"].set()
        assert job.outcome() == "done"
        result = gone.outcome()
    assert job.finished_at is not None and gone.finished_at is not None
    assert job.finished_at <= gone.finished_at
    _assert_consent_then_upload(portal, pause["statements"])
    # the withdrawal erased the file the job had stored
    assert result.erased_files == 1
    (row,) = portal.files()
    assert (row.status, row.object_id) == ("erased", None)
    with portal.sessions() as session:
        assert session.query(StoredObject).count() == 0
    assert portal.objects_in_storage() == set(), "the erased file's object is still stored"
    assert portal.partial_writes() == []
    assert not portal.has_key(consent_id), "the consent's key outlived the erasure"
    assert portal.upload(upload_id).state == "done"
