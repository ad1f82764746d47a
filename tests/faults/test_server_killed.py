"""The web server is SIGKILLed in the middle of a tus PATCH body, then restarted: the upload
resumes from a durable offset, and the file is stored exactly once."""

from __future__ import annotations

import hashlib
import time

import pytest

from storage import LocalBackend

from .conftest import Portal
from .dicom import multiframe_bytes
from .http import Tus, raw_patch

MIB = 1 << 20
WAIT_SECONDS = 10.0


def _wait(condition, seconds: float = WAIT_SECONDS, what: str = "") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {seconds:.0f} s waiting for {what}")
        time.sleep(0.02)


def test_server_killed_mid_body_then_resumed(portal: Portal) -> None:
    """A PATCH is sent slowly over a raw socket; once 1 MiB of it is sent and the server is
    writing its part (a ``.part`` file in the storage's tmp folder) the whole gunicorn
    process group gets SIGKILL. After a restart on the same port, HEAD answers the durable
    offset (the last committed part, never more than was sent), the donor's connection
    dropping mid-body keeps what arrived, and the upload resumes and completes. The parts
    decrypt (the instance's key file, the database's scope keys) to exactly the source
    bytes; the ingest job then stores one object and one accepted file."""
    content = multiframe_bytes(4)
    source_sha = hashlib.sha256(content).hexdigest()
    server = portal.web()
    tus = Tus(portal.donor_client(server))
    created = tus.create(len(content))
    assert created.status == 201, created.text
    url = created.headers["location"]
    upload_id = url.rsplit("/", 1)[1]
    first = tus.patch(url, 0, content[:MIB])
    assert first.status == 204, first.text
    assert first.headers["upload-offset"] == str(MIB)

    # 1. SIGKILL mid-body
    killed_at: list[int] = []

    def kill_mid_body(sent: int) -> bool:
        # 1 MiB sent (more than the socket buffers hold) and the part being written
        if not killed_at and sent >= MIB:
            tmp = portal.storage_dir / "tmp"
            _wait(lambda: any(tmp.glob("*.part")), what="the server to write the part")
            server.kill()
            killed_at.append(sent)
        return True

    sent, reply = raw_patch(tus, url, MIB, content[MIB:], on_sent=kill_mid_body)
    assert killed_at, "the server was never killed"
    assert reply is None, f"the killed server answered {reply}"
    assert portal.partial_writes(), "the killed request left no partial write to sweep"

    server = portal.web(port=server.port)
    offset = tus.offset(url)
    assert offset <= MIB + sent
    assert offset == MIB, "only committed parts count; the killed body was never recorded"
    assert portal.upload(upload_id).offset == MIB
    assert len(portal.parts(upload_id)) == 1

    # 2. the donor's connection drops mid-body: what arrived is kept
    sent, reply = raw_patch(tus, url, MIB, content[MIB:], on_sent=lambda n: n < MIB)
    assert reply is None
    _wait(lambda: portal.upload(upload_id).offset > MIB, what="the received bytes to be kept")
    offset = tus.offset(url)
    assert MIB < offset <= MIB + sent

    # 3. resume from the server's offset and complete
    done = tus.patch(url, offset, content[offset:])
    assert done.status == 204, done.text
    assert done.headers["upload-offset"] == str(len(content))
    upload = portal.upload(upload_id)
    assert (upload.offset, upload.length, upload.state) == (len(content), len(content), "queued")
    assert portal.parts_sha256(upload_id) == (len(content), source_sha)
    parts = {part.object_id for part in portal.parts(upload_id)}
    assert portal.objects_in_storage() == parts, "an object no part row records"
    # the killed request's temporary file is what the sweep removes
    assert portal.storage_dir.joinpath("tmp").is_dir()
    assert LocalBackend(portal.storage_dir).remove_stale_partials(0) >= 1
    assert portal.partial_writes() == []

    # 4. the ingest job (no worker consumes the broker: run the workers' use case here)
    assert portal.run_ingest(upload_id) == "done"
    (stored,) = portal.stored_objects()
    (row,) = portal.files()
    assert row.status == "accepted", (row.status, row.reason_code, row.reason)
    assert row.object_id == stored.object_id and row.size == len(content)
    assert portal.objects_in_storage() == {stored.object_id}
    assert not portal.has_key(upload.scope_id), "the quarantine key outlived the upload"
    assert portal.parts(upload_id) == []
    # a second delivery of the same job changes nothing
    assert portal.run_ingest(upload_id) == "done"
    assert [o.object_id for o in portal.stored_objects()] == [stored.object_id]
