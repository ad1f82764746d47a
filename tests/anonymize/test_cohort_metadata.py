"""The verdict carries the de-identified metadata a cohort is selected by, as written."""

from __future__ import annotations

import pytest

from anonymize import Profile
from tests.anonymize.helpers import ct_dataset, part10, run


def _outcome(profile: Profile | None = None, **elements: object):
    return run(part10(ct_dataset(**elements)), profile=profile).outcome


def test_the_default_profile_reports_body_part_sex_age_and_shifted_study_year() -> None:
    result = run(part10(ct_dataset(BodyPartExamined="CHEST", PatientSex="F",
                                   PatientAge="052Y")))
    outcome = result.outcome
    assert (outcome.body_part, outcome.patient_sex, outcome.patient_age_years) == ("CHEST", "F",
                                                                                  52)
    written = result.dataset.StudyDate
    assert outcome.study_year == int(written[:4])
    assert 2010 <= outcome.study_year <= 2019  # 20200314 shifted back by 1 to 10 years


def test_what_the_profile_removes_is_not_reported() -> None:
    outcome = _outcome(Profile.named("basic"), BodyPartExamined="CHEST", PatientSex="F",
                       PatientAge="052Y")
    assert outcome.patient_sex is None
    assert outcome.patient_age_years is None
    assert outcome.study_year is None
    assert outcome.body_part == "CHEST"


@pytest.mark.parametrize(("age", "years"), [("052Y", 52), ("006M", 0), ("018M", 1),
                                             ("104W", 1), ("400D", 1), ("000Y", 0),
                                             ("52Y", None), ("ABCD", None)])
def test_ages_are_whole_years(age: str, years: int | None) -> None:
    assert _outcome(PatientAge=age).patient_age_years == years


def test_missing_metadata_is_none() -> None:
    outcome = _outcome()
    assert (outcome.body_part, outcome.patient_sex, outcome.patient_age_years) == (None,) * 3
