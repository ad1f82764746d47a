"""No plaintext PHI on disk, ever: not in storage, not in the temporary files of an upload.

While the upload is being de-identified, every regular file the process holds open (including
deleted temporary files, invisible in any folder listing) is read and searched, as are the
temporary folders and the storage folder. A control run with Werkzeug's own stream factory
proves the scan finds plaintext when there is some.
"""

from __future__ import annotations

import io
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from pydicom import dcmread
from pydicom.data import get_testdata_file

import anonymize
from donation_portal.web import donor as donor_views
from donation_portal.web.limits import LimitedRequest

from .conftest import Browser

PATIENT_NAME = b"Plaintextova^Zdenka"


def large_dicom() -> bytes:
    """A real CT header with 4 MiB of pixel data: large enough for Werkzeug to spool to disk."""
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    ds.PatientName = PATIENT_NAME.decode()
    ds.Rows = ds.Columns = 1448
    ds.PixelData = bytes(1448 * 1448 * 2)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def open_regular_files() -> list[Path]:
    found = []
    for fd in os.listdir("/proc/self/fd"):
        path = Path("/proc/self/fd") / fd
        try:
            if stat.S_ISREG(os.stat(path).st_mode):
                found.append(path)
        except OSError:
            continue
    return found


def files_under(*roots: str | Path) -> list[Path]:
    return [p for root in roots for p in Path(root).rglob("*") if p.is_file()]


# "DICM" and the file meta group's first tag, as every Part 10 file the tests upload starts:
# the 4 bytes "DICM" alone turn up by chance in megabytes of ciphertext (about 1 in 1000 runs).
DICOM_PREFIX = b"DICM\x02\x00\x00\x00"


def plaintext_hits(paths: list[Path]) -> list[str]:
    hits = []
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError:
            continue
        if PATIENT_NAME in data or DICOM_PREFIX in data:
            hits.append(os.path.realpath(path))
    return hits


@pytest.fixture
def spy_on_disk(app: Flask, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """Scan the disk while the body is parsed and while the engine runs; returns the hits."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    hits: list[str] = []
    real: Callable[..., Any] = anonymize.deidentify

    def scanning(*args: Any, **kwargs: Any) -> Any:
        hits.extend(plaintext_hits(open_regular_files()))
        hits.extend(plaintext_hits(files_under(temp, app.config["STORAGE_DIR"])))
        return real(*args, **kwargs)

    monkeypatch.setattr(anonymize, "deidentify", scanning)
    real_take: Callable[..., Any] = donor_views.take_spooled

    def scanning_take() -> Any:  # the web process, right after the body was parsed
        hits.extend(plaintext_hits(open_regular_files()))
        hits.extend(plaintext_hits(files_under(temp, app.config["STORAGE_DIR"])))
        return real_take()

    monkeypatch.setattr(donor_views, "take_spooled", scanning_take)
    return hits


def test_a_large_upload_never_touches_the_disk_in_plaintext(
    app: Flask, donor: Browser, spy_on_disk: list[str], tmp_path: Path
) -> None:
    response = donor.upload([large_dicom()])
    assert response.status_code == 303
    assert spy_on_disk == []
    assert plaintext_hits(files_under(tmp_path, app.config["STORAGE_DIR"])) == []


def test_the_scan_finds_werkzeugs_own_plaintext_spool(
    app: Flask, donor: Browser, spy_on_disk: list[str]
) -> None:
    # Werkzeug's default: large files spool to a temporary file (with the portal's limits)
    app.request_class = LimitedRequest
    donor.upload([large_dicom()])
    assert spy_on_disk, "the scan should have seen the plaintext temporary file"
