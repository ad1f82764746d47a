"""Template files: strict validation, identity by content hash, publishing, signability."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

import consent as consents
from consent import Consent, ConsentTemplate, Sealer
from consent.duo import MODIFIER, PERMISSION

NOW = datetime.now(UTC)
SEALER = Sealer(b"s" * 32)


def spec_with(**changes: object) -> dict[str, object]:
    return {**consents.default_template_spec(), **changes}


def count(session: Session, model: type) -> int:
    return session.scalar(select(func.count()).select_from(model)) or 0


def test_shipped_default_exists_in_english_and_german_with_the_same_modules() -> None:
    english, german = consents.default_template_specs()
    assert (english["language"], german["language"]) == ("en", "de")
    assert english["name"] == german["name"] and english["version"] == german["version"]
    assert consents.default_template_spec() == english
    for a, b in zip(english["modules"], german["modules"], strict=True):
        assert (a["id"], a["required"], a["duo"]) == (b["id"], b["required"], b["duo"])
        assert a["title"] != b["title"]
    assert consents.template_id(english) != consents.template_id(german)


def test_duo_table_has_the_issue_terms_with_their_kind() -> None:
    table = consents.duo_terms_table()
    kinds = {term: table[term].kind for term in ("DUO:0000042", "DUO:0000006", "DUO:0000007")}
    assert set(kinds.values()) == {PERMISSION}
    for term in ("DUO:0000046", "DUO:0000019", "DUO:0000028"):
        assert table[term].kind == MODIFIER
    assert table["DUO:0000042"].label("de") != table["DUO:0000042"].label("en")
    assert table["DUO:0000042"].iri.endswith("/DUO_0000042")


def test_a_yaml_file_and_the_same_content_as_json_have_one_identity(tmp_path: Path) -> None:
    spec = spec_with(valid_from="2026-02-03", version="7")
    as_yaml = tmp_path / "t.yaml"
    as_yaml.write_text(yaml.safe_dump(spec, allow_unicode=True), "utf-8")
    reordered = {key: spec[key] for key in reversed(list(spec))}
    as_json = tmp_path / "t.json"
    as_json.write_text(json.dumps(reordered, default=str, indent=3), "utf-8")
    from_yaml = consents.load_template_file(as_yaml)
    from_json = consents.load_template_file(as_json)
    assert from_yaml["valid_from"] == datetime(2026, 2, 3, tzinfo=UTC)
    assert consents.template_id(from_yaml) == consents.template_id(from_json)
    assert consents.template_id(from_yaml) != consents.template_id(spec_with(version="7"))


def test_a_file_with_an_unknown_duo_term_is_refused_and_nothing_is_published(
    db_session: Session, tmp_path: Path
) -> None:
    spec = consents.default_template_spec()
    spec["modules"][1]["duo"] = ["DUO:0000042", "DUO:9999999"]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(spec), "utf-8")
    with pytest.raises(consents.InvalidTemplate, match="DUO:9999999"):
        consents.load_template_file(path)
    with pytest.raises(consents.InvalidTemplate, match="general_research.*DUO:9999999"):
        consents.publish_template(db_session, spec)
    assert count(db_session, ConsentTemplate) == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"licence": "CC0"}, "unknown field.*licence"),
        ({"title": "  "}, "missing field.*title|title must be"),
        ({"language": "English"}, "language"),
        ({"valid_from": "2027-01-01", "valid_until": "2026-01-01"}, "valid_until must be after"),
        ({"valid_until": "soon"}, "valid_until"),
        ({"consent_valid_days": 0}, "consent_valid_days"),
        ({"modules": []}, "modules must be a non-empty list"),
    ],
)
def test_malformed_templates_are_refused_with_a_clear_message(
    change: dict[str, object], message: str
) -> None:
    with pytest.raises(consents.InvalidTemplate, match=message):
        consents.validate_template_spec(spec_with(**change))


def test_module_rules_are_enforced() -> None:
    base = consents.default_template_spec()["modules"]
    twice = [base[0], {**base[1], "id": "research"}]
    with pytest.raises(consents.InvalidTemplate, match="'research' is used twice"):
        consents.validate_template_spec(spec_with(modules=twice))
    restriction = {
        "id": "ncu",
        "title": "Non-commercial",
        "required": False,
        "duo": ["DUO:0000046"],
    }
    with pytest.raises(consents.InvalidTemplate, match="module ncu: an optional module"):
        consents.validate_template_spec(spec_with(modules=[base[0], restriction]))
    modifiers_only = [{**base[0], "duo": ["DUO:0000046"]}]
    with pytest.raises(consents.InvalidTemplate, match="no module grants a DUO permission"):
        consents.validate_template_spec(spec_with(modules=modifiers_only))
    with pytest.raises(consents.InvalidTemplate, match="required must be true or false"):
        consents.validate_template_spec(spec_with(modules=[{**base[0], "required": "yes"}]))


@given(
    title=st.text(min_size=1, max_size=80).filter(str.strip),
    version=st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,10}\Z"),
    duo=st.lists(st.sampled_from(["DUO:0000042", "DUO:0000006", "DUO:0000046"]), min_size=1),
)
def test_validation_is_idempotent_and_identity_follows_content(
    title: str, version: str, duo: list[str]
) -> None:
    modules = [{"id": "research", "title": "Research", "required": True, "duo": duo}]
    if not any(term != "DUO:0000046" for term in duo):
        modules[0]["duo"] = [*duo, "DUO:0000006"]
    spec = spec_with(title=title, version=version, modules=modules)
    once = consents.validate_template_spec(spec)
    assert consents.validate_template_spec(once) == once
    assert once["modules"][0]["duo"] == sorted(set(once["modules"][0]["duo"]))
    assert consents.template_id(once) == consents.template_id(spec)
    assert consents.template_id(spec_with(title=title + "!", version=version, modules=modules)) != (
        consents.template_id(spec)
    )


def test_published_text_is_immutable_a_change_needs_a_new_version(db_session: Session) -> None:
    spec = consents.default_template_spec()
    first = consents.publish_template(db_session, spec)
    assert consents.publish_template(db_session, dict(spec)) is first
    with pytest.raises(consents.TemplateConflict, match="new version"):
        consents.publish_template(db_session, {**spec, "body": spec["body"] + "\nMore."})
    second = consents.publish_template(db_session, {**spec, "version": "2", "body": "New."})
    assert second.id != first.id
    assert count(db_session, ConsentTemplate) == 2
    assert consents.template_is_intact(first) and consents.template_is_intact(second)


def test_current_template_is_the_newest_signable_one_per_language(db_session: Session) -> None:
    with pytest.raises(consents.NoTemplate):
        consents.current_template(db_session)
    english, german = (
        consents.publish_template(db_session, s) for s in consents.default_template_specs()
    )
    assert consents.current_template(db_session) is english
    assert consents.current_template(db_session, "de") is german
    expired = consents.publish_template(
        db_session,
        spec_with(version="2", valid_until=NOW - timedelta(days=1), valid_from="2020-01-01"),
    )
    future = consents.publish_template(
        db_session, spec_with(version="3", valid_from=NOW + timedelta(days=9))
    )
    assert consents.current_template(db_session) is english
    assert {expired.id, future.id} <= {t.id for t in consents.templates(db_session, language="en")}
    assert consents.current_template(db_session, name="imaging-donation") is english
    with pytest.raises(consents.NoTemplate):
        consents.current_template(db_session, name="another-study")


@pytest.mark.parametrize(
    "changes",
    [
        {"version": "2", "valid_from": "2020-01-01", "valid_until": NOW - timedelta(seconds=1)},
        {"version": "3", "valid_from": NOW + timedelta(days=1)},
    ],
)
def test_expired_or_not_yet_valid_templates_cannot_be_signed(
    db_session: Session, changes: dict[str, object]
) -> None:
    template = consents.publish_template(db_session, spec_with(**changes))
    with pytest.raises(consents.NotSignable):
        consents.sign_consent(
            db_session,
            subject_ref="user:1",
            template=template,
            modules={"research"},
            typed_name="A",
            sealer=SEALER,
        )
    assert count(db_session, Consent) == 0


def test_an_unpublished_or_altered_template_cannot_be_signed(db_session: Session) -> None:
    spec = consents.validate_template_spec(consents.default_template_spec())
    unpublished = ConsentTemplate(id=consents.template_id(spec), **spec)
    with pytest.raises(consents.NotSignable, match="not published"):
        consents.sign_consent(
            db_session,
            subject_ref="user:1",
            template=unpublished,
            modules={"research"},
            typed_name="A",
            sealer=SEALER,
        )
    published = consents.publish_template(db_session, spec)
    db_session.execute(
        update(ConsentTemplate).where(ConsentTemplate.id == published.id).values(body="Other text")
    )
    db_session.expire(published)
    assert not consents.template_is_intact(published)
    with pytest.raises(consents.NotSignable, match="does not match"):
        consents.sign_consent(
            db_session,
            subject_ref="user:1",
            template=published,
            modules={"research"},
            typed_name="A",
            sealer=SEALER,
        )
    assert count(db_session, Consent) == 0
