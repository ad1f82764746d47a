"""``python -m anonymize SRC DST``: outputs, report, exit codes, key handling, workers."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydicom import dcmread

from anonymize.cli import DEFAULT_PSEUDONYM, main
from anonymize.outcome import REASONS
from tests.anonymize.helpers import PATIENT_ID, ct_dataset, part10
from tests.anonymize.test_bad_input import dicomdir


@pytest.fixture
def src(tmp_path: Path) -> Path:
    """A donor's CD: two images, a DICOMDIR, a text file; names hold PHI."""
    root = tmp_path / "Doe_Johnathan_MRN7781234"
    (root / "series1").mkdir(parents=True)
    for number in range(2):
        ds = ct_dataset(SOPInstanceUID=f"1.2.826.0.1.3680043.9.7781.3.{number}")
        (root / "series1" / f"Doe_{number}.dcm").write_bytes(part10(ds))
    (root / "DICOMDIR").write_bytes(dicomdir())
    (root / "notes.txt").write_text("Johnathan Doe, MRN7781234\n")
    return root


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "deid.key"
    path.write_text(base64.b64encode(bytes(range(32))).decode() + "\n")
    return path


def _outputs(dst: Path) -> list[Path]:
    return sorted(p for p in dst.rglob("*") if p.is_file())


def test_a_folder_is_deidentified_and_reported(src: Path, tmp_path: Path, key_file: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    dst, report = tmp_path / "out", tmp_path / "report.json"
    code = main([str(src), str(dst), "--key-file", str(key_file), "--report", str(report)])
    assert code == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("files in: 4, de-identified: 2, needs review: 0, rejected: 2, seconds:")
    outputs = _outputs(dst)
    assert len(outputs) == 2
    for path in outputs:
        study, series, name = path.relative_to(dst).parts
        out = dcmread(path)
        assert (study, series, name) == (out.StudyInstanceUID, out.SeriesInstanceUID,
                                         f"{out.SOPInstanceUID}.dcm")
        assert out.PatientName == DEFAULT_PSEUDONYM
    text = report.read_text()
    assert "Doe" not in text and PATIENT_ID not in text and "notes" not in text
    entries = json.loads(text)["inputs"]
    assert [e["index"] for e in entries] == [0, 1, 2, 3]
    verdicts = {e["index"]: (e["verdict"], e["reason_code"]) for e in entries}
    # sorted relative paths: DICOMDIR, notes.txt, series1/Doe_0.dcm, series1/Doe_1.dcm
    assert verdicts[0] == ("rejected", "dicomdir")
    assert verdicts[1] == ("rejected", "not_dicom")
    assert verdicts[2][0] == verdicts[3][0] == "deidentified"
    assert json.loads(text)["key_reproducible"] is True


def test_the_same_key_gives_the_same_output_names(src: Path, tmp_path: Path,
                                                  key_file: Path) -> None:
    names = []
    for run_number in range(2):
        dst = tmp_path / f"out{run_number}"
        assert main([str(src), str(dst), "--key-file", str(key_file)]) == 0
        names.append([p.relative_to(dst) for p in _outputs(dst)])
    assert names[0] == names[1]


def test_without_a_key_file_a_warning_is_printed(src: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(src), str(tmp_path / "a")]) == 0
    assert "not reproducible" in capsys.readouterr().err
    assert main([str(src), str(tmp_path / "b")]) == 0
    first = [p.name for p in _outputs(tmp_path / "a")]
    second = [p.name for p in _outputs(tmp_path / "b")]
    assert first and set(first).isdisjoint(second)  # a fresh random key each run


def test_workers_produce_the_same_outputs(src: Path, tmp_path: Path, key_file: Path) -> None:
    assert main([str(src), str(tmp_path / "one"), "--key-file", str(key_file)]) == 0
    assert main([str(src), str(tmp_path / "two"), "--key-file", str(key_file),
                 "--workers", "2"]) == 0
    one = {p.relative_to(tmp_path / "one"): p.read_bytes() for p in _outputs(tmp_path / "one")}
    two = {p.relative_to(tmp_path / "two"): p.read_bytes() for p in _outputs(tmp_path / "two")}
    assert one == two and len(one) == 2


def test_needs_review_outputs_are_kept_apart(tmp_path: Path, key_file: Path) -> None:
    source = tmp_path / "in.dcm"
    source.write_bytes(part10(ct_dataset(BurnedInAnnotation="YES")))
    dst = tmp_path / "out"
    assert main([str(source), str(dst), "--key-file", str(key_file)]) == 0
    [output] = _outputs(dst)
    assert output.relative_to(dst).parts[0] == "needs_review"


def test_options_and_profile_are_applied(tmp_path: Path, key_file: Path) -> None:
    source = tmp_path / "in.dcm"
    source.write_bytes(part10(ct_dataset(StationName="CTSCANNER1")))
    dst = tmp_path / "out"
    assert main([str(source), str(dst), "--key-file", str(key_file), "--profile", "basic",
                 "--option", "retain_device_id", "--pseudonym", "P-42"]) == 0
    out = dcmread(_outputs(dst)[0])
    assert out.StationName == "CTSCANNER1" and out.PatientID == "P-42"
    assert [i.CodeValue for i in out.DeidentificationMethodCodeSequence] == ["113100", "113109"]


def test_a_file_whose_pixels_do_not_match_its_header_is_reported(
        tmp_path: Path, key_file: Path) -> None:
    source, dst, report = tmp_path / "in.dcm", tmp_path / "out", tmp_path / "report.json"
    source.write_bytes(part10(ct_dataset(Rows=17)))  # 17 rows declared, 16 rows of pixels
    assert main([str(source), str(dst), "--key-file", str(key_file),
                 "--report", str(report)]) == 0
    assert _outputs(dst) == []
    [entry] = json.loads(report.read_text())["inputs"]
    assert (entry["verdict"], entry["reason_code"]) == ("rejected", "pixel_geometry")
    assert entry["reason"] == REASONS["pixel_geometry"]


@pytest.mark.parametrize(
    "argv",
    [[], ["only-src"], ["a", "b", "--workers", "0"], ["a", "b", "--option", "no_such"]],
)
def test_usage_errors_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2


def test_system_errors_exit_1(tmp_path: Path, src: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "missing"), str(tmp_path / "out")]) == 1
    short = tmp_path / "short.key"
    short.write_text(base64.b64encode(b"x" * 8).decode())
    assert main([str(src), str(tmp_path / "out"), "--key-file", str(short)]) == 1
    assert main([str(src), str(tmp_path / "out"), "--profile", "nope"]) == 1
    assert "error:" in capsys.readouterr().err


def test_no_partial_or_temporary_files_are_left(src: Path, tmp_path: Path,
                                                key_file: Path) -> None:
    dst = tmp_path / "out"
    assert main([str(src), str(dst), "--key-file", str(key_file)]) == 0
    assert not any(p.suffix == ".part" for p in dst.rglob("*"))
    assert not (dst / ".partial").exists()


def test_module_entry_point_runs(src: Path, tmp_path: Path, key_file: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "anonymize", str(src), str(tmp_path / "out"),
         "--key-file", str(key_file)],
        capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("files in: 4, de-identified: 2")
    assert "\r" not in completed.stderr  # no progress indicator when stderr is not a TTY
