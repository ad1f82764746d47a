"""A Celery worker is SIGKILLed in the middle of an ingest job: the broker delivers the job
again to a new worker, and the file is stored exactly once."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from donation_portal.adapters.jobs import INGEST_TASK
from donation_portal.adapters.services import celery_producer
from storage import sweep_quarantine

from .conftest import REDIS_BASE, WORKER_BROKER_DB, Portal
from .dicom import multiframe_file
from .http import Tus

MIB = 1 << 20
FILE_MIB = 128  # big enough that de-identifying and encrypting it takes a visible while
PIECE = 32 * MIB
VISIBILITY_SECONDS = 2  # JOB_STALLED_AFTER, the broker's visibility timeout
JOB_SECONDS = 90.0
# the in-process app's jobs go to the embedded broker (kombu's SQLAlchemy transport)
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")


@pytest.fixture
def job_queue(redis_broker: Callable[[int], Any]) -> Iterator[str]:
    """A queue of this test's own on the suite's Redis database; forgotten afterwards
    (its list, its binding, and any unacknowledged message that still names it)."""
    queue = f"faults-{secrets.token_hex(4)}"
    yield queue
    client = redis_broker(WORKER_BROKER_DB)
    client.delete(queue, f"_kombu.binding.{queue}")
    for tag, payload in (client.hgetall("unacked") or {}).items():
        if queue.encode() in payload:
            client.hdel("unacked", tag)
            client.zrem("unacked_index", tag)


def _wait_for(
    condition: Callable[[], bool], seconds: float, what: str, log: Callable[[], str]
) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {seconds:.0f} s waiting for {what}:\n{log()}")
        time.sleep(0.01)


def _output_growing(portal: Portal, at_least: int) -> bool:
    """The job's de-identified output is being written (a partial write in storage/tmp)."""
    for path in (portal.storage_dir / "tmp").glob("*.part"):
        try:
            if path.stat().st_size >= at_least:
                return True
        except FileNotFoundError:
            continue
    return False


def test_worker_killed_mid_job_is_redelivered_and_stores_once(
    portal: Portal, job_queue: str, tmp_path: Path
) -> None:
    """A 128 MiB multi-frame file is uploaded through the routes of an in-process app (tus
    PATCHes of 32 MiB, so five parts);
    its ingest job goes to a queue of the test's own, consumed by a real ``celery worker``
    (acks late, reject on worker lost, visibility timeout JOB_STALLED_AFTER=2 s). Once the
    job has claimed the upload (state ``processing``, committed) and its de-identified
    output is being written, the worker's whole process group gets SIGKILL: the job is not
    acknowledged. A new worker restores the unacknowledged message when it starts and runs
    the job again: the upload ends ``done`` after two claims, with one StoredObject, one
    accepted file, and no object in storage but that one; the killed attempt left only a
    partial write in storage/tmp, which the quarantine sweep removes."""
    source = tmp_path / "big.dcm"
    size, _ = multiframe_file(source, FILE_MIB)
    first = portal.worker(job_queue, "faults-first", JOB_STALLED_AFTER=VISIBILITY_SECONDS)
    tus = Tus(portal.in_process_client())
    created = tus.create(size)
    assert created.status == 201, created.text
    url = created.headers["location"]
    upload_id = url.rsplit("/", 1)[1]
    with open(source, "rb") as handle:
        for offset in range(0, size, PIECE):
            reply = tus.patch(url, offset, handle.read(PIECE), timeout=60)
            assert reply.status == 204, reply.text
    assert portal.upload(upload_id).state == "queued"
    assert len(portal.parts(upload_id)) == -(-size // PIECE)

    first.wait_ready()
    producer = celery_producer(
        {"BROKER_URL": f"{REDIS_BASE}/{WORKER_BROKER_DB}", "JOB_STALLED_AFTER": VISIBILITY_SECONDS}
    )
    try:
        producer.send_task(INGEST_TASK, args=[upload_id], queue=job_queue)
    finally:
        producer.close()

    claimed_at: list[float] = []

    def deidentifying() -> bool:
        if portal.upload(upload_id).state != "processing":
            return False
        claimed_at[:] = claimed_at or [time.monotonic()]  # after the delivery, for sure
        return _output_growing(portal, MIB)

    _wait_for(deidentifying, JOB_SECONDS, "the first worker to be de-identifying", first.output)
    first.kill()
    killed = portal.upload(upload_id)
    assert (killed.state, killed.attempts) == ("processing", 1), "the job ended before the kill"
    assert portal.stored_objects() == []
    assert [row.status for row in portal.files()] == ["processing"]

    # kombu restores unacknowledged messages older than the visibility timeout when a worker
    # starts consuming (then only every ~100 s): start the new worker once it has passed
    time.sleep(max(0.0, claimed_at[0] + VISIBILITY_SECONDS + 0.2 - time.monotonic()))
    second = portal.worker(job_queue, "faults-second", JOB_STALLED_AFTER=VISIBILITY_SECONDS)
    _wait_for(
        lambda: portal.upload(upload_id).state == "done",
        JOB_SECONDS,
        "the job to be delivered again and finish",
        second.output,
    )
    # the job deletes the parts after its commit: wait for the task to end
    second.wait_for(f"{INGEST_TASK}[", 5)
    second.wait_for("succeeded", JOB_SECONDS)
    done = portal.upload(upload_id)
    assert done.attempts >= 2
    (stored,) = portal.stored_objects()
    (row,) = portal.files()
    assert row.status == "accepted", (row.status, row.reason_code, row.reason)
    assert row.object_id == stored.object_id
    assert portal.parts(upload_id) == []
    assert not portal.has_key(done.scope_id)
    assert portal.objects_in_storage() == {stored.object_id}, "an orphan object"
    # what the killed attempt left: a partial write, unreadable (its writer's key is the
    # consent's, but no header was committed), which the sweep removes
    assert portal.partial_writes()
    with portal.sessions() as session:
        report = sweep_quarantine(portal.store(session), [stored.object_id], 0)
        session.commit()
    assert report.deleted_objects == [] and report.removed_partials >= 1
    assert portal.partial_writes() == []
    assert portal.objects_in_storage() == {stored.object_id}
    second.kill()
