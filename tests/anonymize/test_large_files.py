"""Files above the in-memory limit are streamed from the source: same verdicts, same bytes.

The limit (64 MiB) is lowered to nothing here, so every input takes the streamed path.
"""

from __future__ import annotations

import os
import warnings

import pytest

from anonymize import Verdict, reader
from tests.anonymize.helpers import ct_dataset, part10, run
from tests.anonymize.test_bad_input import CASES
from tests.anonymize.test_pydicom_files import FILES


@pytest.fixture
def streamed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reader, "SMALL_FILE", 0)


def _in_memory_then_streamed(data: bytes, monkeypatch: pytest.MonkeyPatch):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        in_memory = run(data)
        monkeypatch.setattr(reader, "SMALL_FILE", 0)
        streamed = run(data)
    return in_memory, streamed


@pytest.mark.parametrize("path", FILES, ids=os.path.basename)
def test_a_streamed_file_is_deidentified_exactly_as_one_read_into_memory(
        path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with open(path, "rb") as handle:
        data = handle.read()
    in_memory, streamed = _in_memory_then_streamed(data, monkeypatch)
    assert streamed.outcome == in_memory.outcome
    assert streamed.data == in_memory.data


@pytest.mark.parametrize("name", sorted(set(CASES) - {"zip_bomb"}))
def test_bad_input_is_rejected_the_same_way_when_streamed(
        name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    in_memory, streamed = _in_memory_then_streamed(CASES[name][0](), monkeypatch)
    assert streamed.outcome.verdict is Verdict.REJECTED
    assert streamed.outcome.reason_code == in_memory.outcome.reason_code


def test_a_streamed_image_is_deidentified(streamed: None) -> None:
    """Guards the comparisons above against both paths failing alike."""
    result = run(part10(ct_dataset()))
    assert result.outcome.verdict is Verdict.DEIDENTIFIED
    assert result.dataset.PatientName == "DONOR-0001"
