from tests.anonymize.helpers import ct_dataset, part10, run


def test_a_plain_ct_is_deidentified() -> None:
    result = run(part10(ct_dataset()))
    assert result.outcome.verdict == "deidentified"
    assert result.dataset.PatientName == "DONOR-0001"
