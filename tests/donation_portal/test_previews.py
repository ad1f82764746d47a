"""Stewards see what they judge (issue 13, point 5): previews of held files.

The renderer on pydicom's own files (uncompressed, RLE, JPEG, JPEG 2000, palette colour,
multi-frame), then the route: held files uploaded by a donor, previewed by a steward, every
view audited, nobody else let in.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from flask import Flask
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from sqlalchemy import select
from sqlalchemy.orm import Session

import consent as consents
from donation_portal.adapters import previews
from donation_portal.adapters.models import DonatedFile

from .conftest import PASSWORD, Browser


def dicom(name: str, **changes: object) -> bytes:
    """One of pydicom's test files, as a new instance, with ``changes`` to its elements."""
    dataset = dcmread(get_testdata_file(name))
    dataset.SOPInstanceUID = generate_uid()
    for keyword, value in changes.items():
        setattr(dataset, keyword, value)
    out = io.BytesIO()
    dataset.save_as(out)
    return out.getvalue()


def read_png(data: bytes) -> tuple[int, int, int, bytes]:
    """Width, height, channels and pixels of an 8-bit PNG, every chunk's CRC checked."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, at = {}, 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind, body = data[at + 4 : at + 8], data[at + 8 : at + 8 + length]
        (crc,) = struct.unpack(">I", data[at + 8 + length : at + 12 + length])
        assert crc == zlib.crc32(kind + body)
        chunks[kind] = chunks.get(kind, b"") + body
        at += 12 + length
    width, height, depth, colour, *_ = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    assert depth == 8 and b"IEND" in chunks
    channels = {0: 1, 2: 3}[colour]
    raw = zlib.decompress(chunks[b"IDAT"])
    stride = 1 + width * channels
    assert len(raw) == height * stride
    rows = [raw[r * stride : (r + 1) * stride] for r in range(height)]
    assert all(row[0] == 0 for row in rows)  # no filter
    return width, height, channels, b"".join(row[1:] for row in rows)


@pytest.mark.parametrize(
    ("name", "size", "channels"),
    [
        ("CT_small.dcm", (128, 128), 1),
        ("MR_small.dcm", (64, 64), 1),
        ("MR_small_RLE.dcm", (64, 64), 1),
        ("MR_small_jp2klossless.dcm", (64, 64), 1),
        ("SC_rgb_jpeg_dcmd.dcm", (256, 256), 3),
        ("examples_palette.dcm", (800, 350), 3),
        ("JPEG2000.dcm", (256, 1024), 1),
    ],
)
def test_the_renderer_decodes_plain_and_compressed_pixels(
    name: str, size: tuple[int, int], channels: int
) -> None:
    rendered = previews.render(Path(get_testdata_file(name)).read_bytes())
    width, height, found, pixels = read_png(rendered.png)
    assert (width, height, found) == (*size, channels)
    assert (rendered.columns, rendered.rows, rendered.frames) == (*size, 1)
    assert len(set(pixels)) > 16  # an image, not a flat field


def test_the_same_pixels_compressed_or_not_give_the_same_preview() -> None:
    plain = previews.render(Path(get_testdata_file("MR_small.dcm")).read_bytes())
    rle = previews.render(Path(get_testdata_file("MR_small_RLE.dcm")).read_bytes())
    assert plain.png == rle.png


def test_monochrome1_is_inverted_and_the_file_window_applies() -> None:
    normal = read_png(previews.render(dicom("MR_small.dcm")).png)[3]
    inverted = read_png(
        previews.render(dicom("MR_small.dcm", PhotometricInterpretation="MONOCHROME1")).png
    )[3]
    assert inverted == bytes(255 - value for value in normal)
    narrow = read_png(previews.render(dicom("MR_small.dcm", WindowWidth=10)).png)[3]
    assert set(narrow) - {0, 255} and sum(v in (0, 255) for v in narrow) > len(narrow) * 0.8


def test_a_large_image_is_downscaled_to_the_maximum_edge() -> None:
    rendered = previews.render(Path(get_testdata_file("JPEG2000.dcm")).read_bytes())
    assert max(read_png(rendered.png)[:2]) <= previews.MAX_EDGE
    image = previews.downscale(np.zeros((3000, 1500), dtype=np.uint8), 1024)
    assert image.shape == (1000, 500)


def test_a_multi_frame_image_is_a_strip_of_frames_spread_over_the_series() -> None:
    assert previews.shown_frames(3) == [0, 1, 2]
    assert previews.shown_frames(30) == [0, 4, 8, 12, 17, 21, 25, 29]
    rendered = previews.render(Path(get_testdata_file("examples_ybr_color.dcm")).read_bytes())
    width, height, channels, _ = read_png(rendered.png)
    assert rendered.frames == 30 and channels == 3
    assert (width, height) == (8 * 160, 120)  # 320 × 240 frames halved, side by side


def test_pixels_no_decoder_reads_and_files_without_pixels_are_unrenderable() -> None:
    with pytest.raises(previews.Unrenderable, match="could not be decoded"):
        previews.render(Path(get_testdata_file("JPEG-lossy.dcm")).read_bytes())
    with pytest.raises(previews.Unrenderable, match="no image"):
        previews.render(Path(get_testdata_file("rtplan.dcm")).read_bytes())
    with pytest.raises(previews.Unrenderable, match="could not be read"):
        previews.render(b"not a DICOM file")
    svg = previews.placeholder_svg("a <b> & c")
    assert b"a &lt;b&gt; &amp; c" in svg and svg.startswith(b"<svg")


@pytest.fixture
def steward(app: Flask, make_user) -> Browser:  # type: ignore[no-untyped-def]
    user = make_user("steward@example.org", "steward")
    browser = Browser(app.test_client())
    assert browser.login("steward@example.org", PASSWORD).status_code == 303
    browser.user = user  # type: ignore[attr-defined]
    return browser


def _held(donor: Browser, db_session: Session, *contents: bytes) -> list[DonatedFile]:
    donor.upload(list(contents))
    files = db_session.scalars(select(DonatedFile).order_by(DonatedFile.position)).all()
    assert [f.status for f in files] == ["needs_review"] * len(contents)
    return list(files)


def test_a_steward_sees_each_held_file_and_every_view_is_audited(
    app: Flask, donor: Browser, steward: Browser, db_session: Session
) -> None:
    ct = dicom("CT_small.dcm", BurnedInAnnotation="YES")
    (held,) = _held(donor, db_session, ct)
    page = steward.get("/steward/donations")
    path = f"/steward/files/{held.id}/preview.png"
    assert f'<img class="preview" src="{path}" width="384" height="256"' in page
    assert "alt=" in page
    for _ in range(2):
        response = steward.client.get(path)
        assert response.status_code == 200 and response.mimetype == "image/png"
        assert response.headers["Cache-Control"] == "no-store"
        assert read_png(response.data)[:3] == (128, 128, 1)
    assert response.headers["X-Preview-Modality"] == "CT"
    assert response.headers["X-Preview-Held-Because"] == "burned_in_annotation"
    assert response.headers["X-Preview-Frames"] == "1"
    assert response.headers["X-Preview-Size"] == "128x128"
    entries = consents.audit.query(db_session, action="file.previewed")
    assert [e.subject_id for e in entries] == [str(held.id)] * 2
    assert {e.actor for e in entries} == {f"user:{steward.user.id}"}
    assert entries[0].detail == {"donation_id": held.donation_id, "rendered": True}
    written = [p.read_bytes() for p in Path(app.instance_path).rglob("*") if p.is_file()]
    assert not any(b"\x89PNG" in content for content in written)


def test_a_multi_frame_held_file_is_previewed_as_a_strip(
    donor: Browser, steward: Browser, db_session: Session
) -> None:
    (held,) = _held(donor, db_session, dicom("examples_ybr_color.dcm"))
    response = steward.client.get(f"/steward/files/{held.id}/preview.png")
    assert response.status_code == 200
    assert read_png(response.data)[:3] == (8 * 160, 120, 3)
    assert response.headers["X-Preview-Frames"] == "30"


def test_unrenderable_pixels_give_a_placeholder_not_an_error(
    donor: Browser, steward: Browser, db_session: Session
) -> None:
    (held,) = _held(donor, db_session, dicom("JPEG-lossy.dcm", BurnedInAnnotation="YES"))
    response = steward.client.get(f"/steward/files/{held.id}/preview.png")
    assert response.status_code == 200 and response.mimetype == "image/svg+xml"
    assert b"could not be decoded" in response.data
    assert response.headers["Cache-Control"] == "no-store"
    (entry,) = consents.audit.query(db_session, action="file.previewed")
    assert entry.detail["rendered"] is False


def test_only_staff_see_previews_and_only_of_files_under_review(
    app: Flask, donor: Browser, steward: Browser, make_user, db_session: Session
) -> None:
    (held,) = _held(donor, db_session, dicom("CT_small.dcm", BurnedInAnnotation="YES"))
    path = f"/steward/files/{held.id}/preview.png"
    assert donor.client.get(path).status_code == 403
    make_user("researcher@example.org", "researcher")
    researcher = Browser(app.test_client())
    assert researcher.login("researcher@example.org").status_code == 303
    assert researcher.client.get(path).status_code == 403
    assert steward.client.get(f"/steward/files/{held.id + 1000}/preview.png").status_code == 404
    donor.upload([dicom("CT_small.dcm")])
    accepted = db_session.scalars(select(DonatedFile).where(DonatedFile.status == "accepted")).one()
    assert steward.client.get(f"/steward/files/{accepted.id}/preview.png").status_code == 409
    assert consents.audit.query(db_session, action="file.previewed") == []
    decision = {"decision": "approve", "reason": ""}
    cleared = steward.submit(
        "/steward/donations", decision, action=f"/steward/files/{held.id}/decision"
    )
    assert cleared.status_code == 303
    assert steward.client.get(path).status_code == 200  # still viewable once decided


def test_a_stored_object_that_cannot_be_read_gives_a_placeholder(
    app: Flask, donor: Browser, steward: Browser, db_session: Session
) -> None:
    (held,) = _held(donor, db_session, dicom("CT_small.dcm", BurnedInAnnotation="YES"))
    for stored in Path(app.config["STORAGE_DIR"]).rglob("*"):
        if stored.is_file():
            stored.unlink()
    response = steward.client.get(f"/steward/files/{held.id}/preview.png")
    assert response.status_code == 200 and response.mimetype == "image/svg+xml"
    assert b"could not be read" in response.data
    (entry,) = consents.audit.query(db_session, action="file.previewed")
    assert entry.detail["rendered"] is False
