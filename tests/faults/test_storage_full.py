"""The storage volume is full: a tus PATCH gets 507 and keeps nothing, the upload resumes once
space is freed, and an ingest job on a full disk is retried or ends as our failure (never
as the donor's "malformed file").

STORAGE_DIR is a 4 MiB tmpfs mounted for the test (we run as root; it is unmounted in
teardown, after every process using it is killed), filled with a ballast file.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from donation_portal.workflows import ingest
from tests.conftest import IN_CI

from .conftest import Portal
from .dicom import multiframe_bytes
from .http import Tus

TMPFS_BYTES = 4 << 20
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs, unmounted (lazily if it is still busy) in teardown."""
    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES},mode=0700", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    if mounted.returncode != 0:
        message = f"cannot mount a tmpfs (root needed): {mounted.stderr.strip()}"
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    try:
        yield mount_point
    finally:
        done = subprocess.run(["umount", str(mount_point)], timeout=10, check=False)
        if done.returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], timeout=10, check=False)


@pytest.fixture
def full_portal(tmpfs: Path, portal: Portal) -> Portal:
    """The portal with its storage on the tmpfs (set up before, torn down after the portal's
    processes)."""
    portal.storage_dir = tmpfs / "storage"
    portal.storage_dir.mkdir()
    return portal


def _free(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def _fill(folder: Path, leave: int = 0) -> Path:
    """A ballast file taking all free space but ``leave`` bytes (all of it when 0)."""
    ballast = folder / "ballast"
    chunk = b"\0" * (64 << 10)
    with open(ballast, "ab", buffering=0) as handle:  # unbuffered: close() writes nothing
        try:
            while _free(folder) - len(chunk) >= leave:
                handle.write(chunk)
            if not leave:
                while True:
                    handle.write(b"\0" * 4096)
        except OSError as error:
            if error.errno != errno.ENOSPC:
                raise
    assert _free(folder) <= max(leave, 4096)
    return ballast


def test_a_patch_bigger_than_the_free_space_is_507_and_resumes_after_freeing(
    full_portal: Portal,
) -> None:
    """Through gunicorn: with 256 KiB left, a PATCH of a 2 MiB file answers 507; the offset
    stays 0, no part row, no object and no partial write remain. Once the ballast is
    deleted the same PATCH completes, and the parts decrypt to the source bytes."""
    portal = full_portal
    content = multiframe_bytes(2)
    server = portal.web()
    tus = Tus(portal.donor_client(server))
    created = tus.create(len(content))
    assert created.status == 201, created.text
    url = created.headers["location"]
    upload_id = url.rsplit("/", 1)[1]

    ballast = _fill(portal.storage_dir.parent, leave=256 << 10)
    refused = tus.patch(url, 0, content)
    assert refused.status == 507, (refused.status, refused.text[:500])
    assert refused.header("content-type") == "application/problem+json"
    assert tus.offset(url) == 0
    assert portal.upload(upload_id).offset == 0
    assert portal.parts(upload_id) == []
    assert portal.objects_in_storage() == set()
    assert portal.partial_writes() == [], "a partial write was left on the full volume"

    ballast.unlink()
    done = tus.patch(url, 0, content)
    assert done.status == 204, done.text
    assert done.headers["upload-offset"] == str(len(content))
    assert portal.upload(upload_id).state == "queued"
    assert portal.parts_sha256(upload_id) == (len(content), hashlib.sha256(content).hexdigest())


def _upload(tus: Tus, content: bytes) -> str:
    created = tus.create(len(content))
    assert created.status == 201, created.text
    url = created.headers["location"]
    done = tus.patch(url, 0, content)
    assert done.status == 204, done.text
    return url.rsplit("/", 1)[1]


def test_an_ingest_job_on_a_full_disk_retries_then_fails_honestly(full_portal: Portal) -> None:
    """Two complete uploads, then a full disk. The job's attempt that is not the last raises
    RetryLater (StorageFull) and leaves the file ``processing`` with nothing written; after
    the space is freed, the retry stores it. On the final attempt with the disk still full,
    the file ends ``rejected`` as *our* failure (``processing_failed``), never as a bad file
    (``malformed``, ``not_dicom``...), and its raw parts are destroyed."""
    portal = full_portal
    tus = Tus(portal.in_process_client())
    retried = _upload(tus, multiframe_bytes(1, number=1))
    final = _upload(tus, multiframe_bytes(1, number=2))
    parts = portal.objects_in_storage()

    ballast = _fill(portal.storage_dir.parent)
    with pytest.raises(ingest.RetryLater, match="StorageFull"):
        portal.run_ingest(retried, final_attempt=False)
    assert portal.upload(retried).state == "processing"
    assert [row.status for row in portal.files()] == ["processing", "waiting"]
    assert portal.stored_objects() == []
    assert portal.objects_in_storage() == parts
    assert portal.partial_writes() == []

    assert portal.run_ingest(final, final_attempt=True) == "done"
    row = portal.files()[1]
    assert (row.status, row.reason_code) == ("rejected", "processing_failed"), row.reason
    assert "problem on our side" in (row.reason or "")
    assert portal.parts(final) == []
    assert not portal.has_key(portal.upload(final).scope_id)

    ballast.unlink()
    assert portal.run_ingest(retried, final_attempt=True) == "done"
    first = portal.files()[0]
    assert first.status == "accepted", (first.status, first.reason_code, first.reason)
    (stored,) = portal.stored_objects()
    assert first.object_id == stored.object_id
    assert portal.objects_in_storage() == {stored.object_id}
    with contextlib.suppress(FileNotFoundError):
        assert not any((portal.storage_dir / "tmp").iterdir())
