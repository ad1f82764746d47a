"""``python -m anonymize SRC DST``: de-identify a file or a folder of DICOM files.

Usage::

    python -m anonymize SRC DST [--key-file FILE] [--pseudonym TEXT] [--profile NAME]
                                [--option NAME ...] [--workers N] [--report FILE.json]

* ``SRC`` is one file or a folder walked recursively (symbolic links are not followed).
  DICOMDIR indexes and non-DICOM files are reported as rejected, never fatal.
* De-identified outputs go to ``DST/<study>/<series>/<sop>.dcm``, named by the *new* UIDs.
  Outputs that a data steward must check first (burned-in text, ultrasound, screen captures,
  ...) go to ``DST/needs_review/<study>/<series>/<sop>.dcm`` so they are never mixed with
  outputs that are ready to share. Every output is written under a temporary name inside
  ``DST/.partial`` and renamed into place only when complete; a rejected input leaves nothing.
* ``--key-file`` holds the deployment secret in the portal's format (base64 text of at least
  32 bytes; a raw binary file of at least 32 bytes is accepted too). Without it a random key is
  used and a warning says the UID mapping and date shift are not reproducible.
* The summary line and the ``--report`` JSON hold no PHI. Original paths and file names can
  hold PHI (``Smith_John_1950.dcm``), so an input is identified only by its ``index``: its
  position, counting from 0, in the list of input files sorted by their path relative to SRC
  (compared as POSIX strings; ``0`` for a single file). The operator can rebuild that list
  locally; the report cannot be joined to names by anyone else.
* Exit status: 0 when every input was de-identified or reported; 1 on a system error (SRC
  missing, DST not writable, bad key file); 2 on a usage error.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import json
import os
import secrets
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from anonymize.core import deidentify
from anonymize.keys import MIN_KEY_BYTES
from anonymize.outcome import DeidentificationError, Outcome, Verdict
from anonymize.profile import OPTIONS, Profile

REVIEW_FOLDER = "needs_review"
PARTIAL_FOLDER = ".partial"
DEFAULT_PSEUDONYM = "ANONYMOUS"
EXIT_OK, EXIT_SYSTEM, EXIT_USAGE = 0, 1, 2


class CliError(Exception):
    """A usage or system problem that ends the run with a message and a non-zero status."""


@dataclass(frozen=True)
class Job:
    """What every worker needs to know about the run (sent once per process)."""

    key: bytes
    pseudonym: str
    options: frozenset[str]
    dst: str


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m anonymize",
        description="De-identify DICOM files (DICOM PS3.15 Annex E) without decoding pixels.",
    )
    parser.add_argument("src", metavar="SRC", help="a DICOM file or a folder (walked recursively)")
    parser.add_argument("dst", metavar="DST", help="output folder")
    parser.add_argument("--key-file", help="secret for UID remapping and date shifting")
    parser.add_argument("--pseudonym", default=DEFAULT_PSEUDONYM,
                        help=f"PatientName/PatientID of the outputs (default {DEFAULT_PSEUDONYM})")
    parser.add_argument("--profile", default="default", help="basic, default or tcia")
    parser.add_argument("--option", action="append", default=[], metavar="NAME",
                        choices=OPTIONS, help="add a PS3.15 option (repeatable)")
    parser.add_argument("--workers", type=_positive, default=1, metavar="N",
                        help="worker processes (default 1)")
    parser.add_argument("--report", metavar="FILE.json", help="write a JSON report without PHI")
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def read_key_file(path: str) -> bytes:
    """The portal's key file format (base64 text), or raw bytes; at least 32 bytes either way."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read the key file: {exc.strerror}") from None
    try:
        key = base64.b64decode(data.strip(), validate=True)
    except (binascii.Error, ValueError):
        key = data
    if len(key) < MIN_KEY_BYTES:
        raise CliError(f"the key file must hold at least {MIN_KEY_BYTES} bytes of key")
    return key


def collect_inputs(src: Path, dst: Path) -> list[Path]:
    """Every regular file under ``src`` (or ``src`` itself), sorted by relative POSIX path."""
    if src.is_file():
        return [src]
    if not src.is_dir():
        raise CliError("SRC is neither a file nor a folder")
    skip = dst.resolve()
    found: list[tuple[str, Path]] = []
    for root, dirs, files in os.walk(src):
        root_path = Path(root)
        dirs[:] = [d for d in dirs if (root_path / d).resolve() != skip]
        for name in files:
            path = root_path / name
            if path.is_symlink() or not path.is_file():
                continue
            found.append((path.relative_to(src).as_posix(), path))
    found.sort(key=lambda pair: pair[0])
    return [path for _, path in found]


def _target(dst: Path, outcome: Outcome) -> Path:
    parts = [outcome.study_instance_uid, outcome.series_instance_uid, outcome.sop_instance_uid]
    names = [p if p else "unknown" for p in parts]
    base = dst / REVIEW_FOLDER if outcome.verdict is Verdict.NEEDS_REVIEW else dst
    return base / names[0] / names[1] / f"{names[2]}.dcm"


def process_one(job: Job, index: int, path: str) -> dict[str, object]:
    """De-identify one input into its final place; return its report entry."""
    dst = Path(job.dst)
    fd, temp = tempfile.mkstemp(prefix="deid-", suffix=".part", dir=dst / PARTIAL_FOLDER)
    try:
        with os.fdopen(fd, "wb") as handle:
            outcome = deidentify(path, handle, key=job.key, pseudonym=job.pseudonym,
                                 profile=Profile(job.options))
        entry: dict[str, object] = {"index": index, **outcome.as_dict(), "output": None}
        if outcome.verdict is Verdict.REJECTED:
            os.unlink(temp)
            return entry
        target = _target(dst, outcome)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(temp, target)
        entry["output"] = target.relative_to(dst).as_posix()
        return entry
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise


_JOB: Job | None = None


def _init_worker(job: Job) -> None:
    global _JOB
    _JOB = job


def _work(task: tuple[int, str]) -> dict[str, object]:
    assert _JOB is not None
    return process_one(_JOB, *task)


def run_all(job: Job, inputs: Sequence[Path], workers: int) -> Iterator[dict[str, object]]:
    """Report entries in input order, from this process or a pool of ``workers`` processes."""
    tasks = [(index, str(path)) for index, path in enumerate(inputs)]
    if workers == 1 or len(tasks) < 2:
        for task in tasks:
            yield process_one(job, *task)
        return
    chunk = max(1, min(16, len(tasks) // (workers * 4)))
    with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker,
                             initargs=(job,)) as pool:
        yield from pool.map(_work, tasks, chunksize=chunk)


class Progress:
    """``done/total`` on stderr, only when stderr is a terminal."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.enabled = sys.stderr.isatty()
        self._last = 0.0

    def update(self, done: int) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self._last < 0.2 and done < self.total):
            return
        self._last = now
        sys.stderr.write(f"\r{done}/{self.total} files")
        if done == self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def summarise(entries: Sequence[dict[str, object]], seconds: float) -> dict[str, object]:
    counts = Counter(str(entry["verdict"]) for entry in entries)
    return {
        "files_in": len(entries),
        "deidentified": counts[Verdict.DEIDENTIFIED.value],
        "needs_review": counts[Verdict.NEEDS_REVIEW.value],
        "rejected": counts[Verdict.REJECTED.value],
        "seconds": round(seconds, 3),
    }


def summary_line(summary: dict[str, object]) -> str:
    return (f"files in: {summary['files_in']}, de-identified: {summary['deidentified']}, "
            f"needs review: {summary['needs_review']}, rejected: {summary['rejected']}, "
            f"seconds: {summary['seconds']:.2f}")


def write_report(path: str, profile: Profile, reproducible: bool,
                 summary: dict[str, object], entries: Sequence[dict[str, object]]) -> None:
    report = {
        "tool": "anonymize",
        "inputs_identified_by": "index in the input files sorted by path relative to SRC",
        "options": list(profile.ordered()),
        "key_reproducible": reproducible,
        "summary": summary,
        "inputs": list(entries),
    }
    target = Path(path)
    temp = target.with_name(f".{target.name}.part")
    temp.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    os.replace(temp, target)


def _profile(args: argparse.Namespace) -> Profile:
    try:
        return Profile.named(args.profile).with_options(*args.option)
    except DeidentificationError as exc:
        raise CliError(str(exc)) from None


def _key(args: argparse.Namespace) -> tuple[bytes, bool]:
    if args.key_file:
        return read_key_file(args.key_file), True
    print("warning: no --key-file given: a random key is used, so the UID mapping and the "
          "date shift are not reproducible", file=sys.stderr)
    return secrets.token_bytes(32), False


def _prepare_dst(dst: Path) -> None:
    try:
        (dst / PARTIAL_FOLDER).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"cannot create DST: {exc.strerror}") from None


def _cleanup_partial(dst: Path) -> None:
    with contextlib.suppress(OSError):  # kept only if a temp file could not be removed
        (dst / PARTIAL_FOLDER).rmdir()


def run(args: argparse.Namespace) -> int:
    profile = _profile(args)
    if not args.pseudonym.strip():
        raise CliError("--pseudonym must not be empty")
    src, dst = Path(args.src), Path(args.dst)
    if not src.exists():
        raise CliError("SRC does not exist")
    key, reproducible = _key(args)
    inputs = collect_inputs(src, dst)
    _prepare_dst(dst)
    job = Job(key, args.pseudonym, profile.options, str(dst))
    started = time.perf_counter()
    progress = Progress(len(inputs))
    entries: list[dict[str, object]] = []
    try:
        for entry in run_all(job, inputs, args.workers):
            entries.append(entry)
            progress.update(len(entries))
    finally:
        _cleanup_partial(dst)
    summary = summarise(entries, time.perf_counter() - started)
    if args.report:
        write_report(args.report, profile, reproducible, summary, entries)
    print(summary_line(summary))
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return run(args)
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_SYSTEM
    except DeidentificationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_SYSTEM
    except OSError as exc:
        print(f"error: {exc.strerror or type(exc).__name__}", file=sys.stderr)
        return EXIT_SYSTEM
