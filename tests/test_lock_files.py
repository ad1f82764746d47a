"""The lock files (requirements/*.txt, made by `make lock`) pin every declared dependency.

setup.cfg declares ranges; the Makefile installs only what the lock files pin, with hashes. A
dependency added to setup.cfg (or a lower bound raised) without `make lock` would be missing
from a fresh install: these tests fail instead, naming the package.
"""

from __future__ import annotations

import configparser
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ROOT / "requirements" / "runtime.txt"
DEV = ROOT / "requirements" / "dev.txt"
BUILD_IN = ROOT / "requirements" / "build.in"

Pins = Mapping[str, list[tuple[str, list[str]]]]


def _requirement_lines(text: str) -> list[str]:
    """The non-empty lines of a multi-line setup.cfg value or a .in file, without comments."""
    lines = (line.split(" #", 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def declared(extra: str | None = None) -> list[Requirement]:
    """install_requires of setup.cfg, or the given extra's list."""
    config = configparser.ConfigParser(interpolation=None)
    config.read(ROOT / "setup.cfg", encoding="utf-8")
    if extra is None:
        text = config["options"]["install_requires"]
    else:
        text = config["options.extras_require"][extra]
    return [Requirement(line) for line in _requirement_lines(text)]


def build_requirements() -> list[Requirement]:
    """pyproject.toml's [build-system] requires and requirements/build.in (pip)."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    names = list(pyproject["build-system"]["requires"])
    names += _requirement_lines(BUILD_IN.read_text(encoding="utf-8"))
    return [Requirement(name) for name in names]


def parse_lock(text: str) -> Pins:
    """{normalised name: [(version, [hashes])]} of a pip requirements file with hashes.

    A name can be pinned more than once, under exclusive environment markers.
    """
    pins: dict[str, list[tuple[str, list[str]]]] = {}
    for logical in text.replace("\\\n", " ").splitlines():
        line = logical.strip()
        if not line or line.startswith("#"):
            continue
        spec, *options = (part.strip() for part in line.split(" --"))
        hashes = [opt.removeprefix("hash=") for opt in options if opt.startswith("hash=")]
        requirement = Requirement(spec)
        (specifier,) = requirement.specifier  # a pin has exactly one clause
        assert specifier.operator == "==", f"{line!r} is not pinned with =="
        pins.setdefault(canonicalize_name(requirement.name), []).append((specifier.version, hashes))
    return pins


def unpinned(requirements: Iterable[Requirement], pins: Pins) -> list[str]:
    """The requirements that the lock does not pin, or pins outside their range."""
    problems = []
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        versions = [version for version, _ in pins.get(name, [])]
        if not versions:
            problems.append(f"{requirement}: not in the lock")
        for version in versions:
            if not requirement.specifier.contains(version, prereleases=True):
                problems.append(f"{requirement}: the lock pins {name}=={version}")
    return problems


@pytest.fixture(scope="module")
def runtime_pins() -> Pins:
    return parse_lock(RUNTIME.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def dev_pins() -> Pins:
    return parse_lock(DEV.read_text(encoding="utf-8"))


def test_runtime_lock_pins_every_runtime_dependency(runtime_pins: Pins) -> None:
    problems = unpinned(declared() + build_requirements(), runtime_pins)
    assert not problems, f"run `make lock`: {problems}"


def test_dev_lock_pins_every_runtime_and_dev_dependency(dev_pins: Pins) -> None:
    problems = unpinned(declared() + declared("dev") + build_requirements(), dev_pins)
    assert not problems, f"run `make lock`: {problems}"


def test_every_pin_has_a_sha256_hash(runtime_pins: Pins, dev_pins: Pins) -> None:
    for pins in (runtime_pins, dev_pins):
        for name, entries in pins.items():
            for version, hashes in entries:
                assert hashes, f"{name}=={version} has no hash"
                assert all(h.startswith("sha256:") and len(h) == 71 for h in hashes), name


def test_the_dev_lock_keeps_the_runtime_versions(runtime_pins: Pins, dev_pins: Pins) -> None:
    for name, entries in runtime_pins.items():
        assert sorted(dev_pins.get(name, [])) == sorted(entries), name


def test_a_dependency_missing_from_the_lock_is_named() -> None:
    pins = parse_lock(
        "flask==3.1.3 \\\n    --hash=sha256:" + "0" * 64 + "\n    # via x\n"
        "deprecated==1.3.1 ; python_full_version < '3.12' \\\n    --hash=sha256:" + "1" * 64 + "\n"
    )
    requirements = [Requirement(r) for r in ("Flask>=3.0", "Not_Locked>=1", "flask>=4")]
    assert unpinned(requirements, pins) == [
        "Not_Locked>=1: not in the lock",
        "flask>=4: the lock pins flask==3.1.3",
    ]
    assert pins["deprecated"] == [("1.3.1", ["sha256:" + "1" * 64])]


def test_comments_in_setup_cfg_lists_are_not_requirements() -> None:
    assert _requirement_lines("\n    a>=1\n    # tools\n    b  # why\n") == ["a>=1", "b"]
