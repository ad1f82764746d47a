"""Acceptance benchmark of the ingest pipeline: real tus uploads through the real stacks.

    .venv/bin/python bench/ingest.py [--donors 8] [--files-per-donor 25] [--runs 2]
                                     [--workers 2] [--skip-dev] [--skip-serve]
                                     [--keep-logs DIR] [--profile DIR [--profile-mode wall]]

Generates a CT-like data set (``--donors`` patients x ``--files-per-donor`` slices of
512x512 16-bit, about 0.5 MB each, from pydicom's CT_small.dcm with new UIDs, names and
pixel data: a body phantom with noise; fixed seed), then, contenders taking turns (best
of ``--runs``):

* **portal** - the production stack started the way ``make serve`` starts it (PORTAL_ENV=
  production, ``run_dev --procfile Procfile``: migrations, gunicorn, a Celery worker with
  ``--workers`` processes, beat) on a fresh PostgreSQL database ``portal_bench_<random>`` on
  127.0.0.1:5432 and Redis 127.0.0.1:6379 (two database numbers among 2-13 that are empty:
  broker, rate limits), in a fresh instance folder, each turn. The donors' accounts are
  created as an operator creates accounts (registering needs a link by e-mail, and no SMTP
  server is at hand); they log in and sign the consent over HTTP as a browser would; then
  all of them upload at once, each file one tus creation-with-upload POST. files/s =
  files / (first byte sent -> last file processed, the ``updated_at`` of the last upload to
  finish); status.json is polled meanwhile.
* **baseline** - ``python -m anonymize SRC DST --workers W`` over the same files, the whole
  command (interpreter start-up included) timed.

The target is portal / baseline >= 0.5 (PASS or FAIL, exit status 1 on FAIL or on any HTTP
error). Then the development stack, started the way ``make run`` starts it (``run_dev``:
Flask's threaded server, one Celery worker, SQLite, the embedded broker), takes the same
load once: files/s and HTTP errors (target: 0; a refused form is counted, then sent again).

Each turn also prints the CPU milliseconds per file of every process group during the load
(/proc; the machine is shared, so CPU per file is steadier than wall time): where the
portal's cost is, beside the baseline's. ``--profile DIR`` runs py-spy (``pip install
py-spy``; not a dependency) on the web and worker processes during the load and writes
collapsed stacks to DIR; profiled figures are not comparable with unprofiled ones.

Only loopback is used. Every process started is stopped at the end (also on Ctrl-C or
SIGTERM), temp folders removed, databases dropped and the Redis database numbers emptied.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import copy
import http.client
import io
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

# Run as a script, bench/ would be sys.path[0] and bench/storage.py would shadow `storage`.
ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)

import psycopg  # noqa: E402
import redis  # noqa: E402
from pydicom import dcmread  # noqa: E402
from pydicom.data import get_testdata_file  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402

PYTHON = sys.executable
TARGET_RATIO = 0.5
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
SIDE = 512
SEED = 20240611
START_TIMEOUT = 90.0
PIECE = 8 * 2**20  # the upload page's tus piece size
STOP_TIMEOUT = 40.0
PASSWORD = "bench-donor-password-1"  # noqa: S105 (a throw-away account in a throw-away DB)
PENDING = {"waiting", "processing"}
EXPECTED = {"accepted"}  # every generated slice is a clean CT image


def say(text: str) -> None:
    print(text, flush=True)


# --- data -------------------------------------------------------------------------------


@dataclass
class Donor:
    number: int
    files: list[bytes]
    archive: bytes = b""  # the same files as one ZIP archive, as a CD is zipped
    email: str = ""
    cookies: dict[str, str] = field(default_factory=dict)
    csrf: str = ""
    submission: str = ""
    donation_id: str = ""
    created: int = 0  # uploads the portal acknowledged (201)


def make_dataset(folder: Path, donors: int, per_donor: int) -> list[list[Path]]:
    """``donors`` patients, one CT series each, ``per_donor`` slices of 512x512x16 bit."""
    template = dcmread(get_testdata_file("CT_small.dcm"))
    rng = random.Random(SEED)
    paths: list[list[Path]] = []
    for d in range(donors):
        series_dir = folder / f"donor-{d:02d}"
        series_dir.mkdir(parents=True)
        study = generate_uid(entropy_srcs=[str(SEED), "study", str(d)])
        series = generate_uid(entropy_srcs=[str(SEED), "series", str(d)])
        frame = generate_uid(entropy_srcs=[str(SEED), "frame", str(d)])
        # a body-shaped phantom with noise as the image; each slice differs in a band of its own
        base = bytearray(_phantom(rng))
        mine: list[Path] = []
        for s in range(per_donor):
            ds = copy.deepcopy(template)
            sop = generate_uid(entropy_srcs=[str(SEED), "sop", str(d), str(s)])
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = (
                study,
                series,
                frame,
            )
            ds.PatientName = f"Bench{d:02d}^Patient^Q"
            ds.PatientID = f"MRN{SEED % 10000:04d}{d:03d}"
            ds.PatientBirthDate = f"19{50 + d % 40:02d}0{1 + d % 9}1{d % 10}"
            ds.PatientSex = "MF"[d % 2]
            ds.PatientAge = f"{30 + d:03d}Y"
            ds.AccessionNumber = f"ACC{d:03d}{SEED}"
            ds.InstitutionName = "St. Example Hospital"
            ds.ReferringPhysicianName = "Smith^Anna^^Dr."
            ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = "20230412"
            ds.InstanceNumber = s + 1
            ds.ImagePositionPatient = [-169.3, -169.3, -1.0 * s]
            ds.SliceLocation = -1.0 * s
            ds.Rows = ds.Columns = SIDE
            ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
            ds.PixelRepresentation = 0
            band = (s * 4096) % len(base)
            base[band : band + 4096] = _renoised(base[band : band + 4096], rng)
            ds.PixelData = bytes(base)
            path = series_dir / f"{s:04d}.dcm"
            ds.save_as(path, enforce_file_format=True)
            mine.append(path)
        paths.append(mine)
    return paths


def _phantom(rng: random.Random) -> bytes:
    """A CT slice as CT slices are: air (-1000 HU) around an elliptic body of soft tissue
    (about 40 HU) inside a ring of bone, with noise (8 HU in air, 15 in tissue), and padding
    (stored 0) outside the round field of view; stored values are HU + 1024. Pure noise
    would make every file incompressible, which real images are not (a deflated CD is about
    half its size)."""
    samples = bytearray()
    centre = SIDE / 2
    for y in range(SIDE):
        for x in range(SIDE):
            dx, dy = (x - centre) / centre, (y - centre) / centre
            body = (dx / 0.8) ** 2 + (dy / 0.6) ** 2
            if dx * dx + dy * dy > 1.0:
                value = 0
            elif body > 1.0:
                value = 24 + int(rng.gauss(0, 8))
            elif body > 0.85:
                value = 1724 + int(rng.gauss(0, 40))
            else:
                value = 1064 + int(rng.gauss(0, 15))
            samples += max(0, min(4095, value)).to_bytes(2, "little")
    return bytes(samples)


def _renoised(samples: bytes | bytearray, rng: random.Random) -> bytes:
    """The same tissue with new noise (padding stays padding)."""
    out = bytearray()
    for offset in range(0, len(samples), 2):
        value = int.from_bytes(samples[offset : offset + 2], "little")
        if value:
            value = max(1, min(4095, value + int(rng.gauss(0, 15))))
        out += value.to_bytes(2, "little")
    return bytes(out)


# --- processes --------------------------------------------------------------------------


class Stack:
    """A ``run_dev`` supervisor (make run / make serve) and the process groups it started."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.log = name, log
        self._handle = open(log, "wb")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def child_pids(self) -> list[int]:
        return [int(pid) for pid in re.findall(r"started \(pid (\d+)\)", self.text())]

    def named_pids(self) -> dict[str, int]:
        found = re.findall(r"^(\w+)\s*\| started \(pid (\d+)\)", self.text(), re.MULTILINE)
        return {name: int(pid) for name, pid in found}

    def wait_ready(self, port: int, need_worker: bool = True) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{tail(self.text())}")
            web_ok = _answers(port)
            worker_ok = not need_worker or re.search(r"\S@\S+ ready\.", self.text())
            if web_ok and worker_ok:
                return
            time.sleep(0.3)
        raise RuntimeError(
            f"{self.name} not ready after {START_TIMEOUT:.0f} s:\n{tail(self.text())}"
        )

    def stop(self) -> None:
        children = self.child_pids()
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=STOP_TIMEOUT)
        for pid in [self.process.pid, *children]:  # every group run_dev made, whatever is left
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        self._handle.close()


def _processes() -> dict[int, tuple[int, float]]:
    """Every process: pid -> (parent pid, CPU seconds used so far, user + system)."""
    tick = os.sysconf("SC_CLK_TCK")
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        found[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    return found


def cpu_by_group(groups: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds used by each group of process trees (roots and all their descendants;
    a negative pid counts that one process alone)."""
    table = _processes()
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    used = {}
    for name, roots in groups.items():
        seen, todo = {-pid for pid in roots if pid < 0}, [pid for pid in roots if pid > 0]
        while todo:
            pid = todo.pop()
            if pid in seen or pid not in table:
                continue
            seen.add(pid)
            todo.extend(children.get(pid, []))
        used[name] = sum(table[pid][1] for pid in seen)
    return used


def tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _answers(port: int) -> bool:
    """The web server answers /healthz (503 is fine: no worker heartbeat was recorded yet)."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/healthz")
        ok = conn.getresponse().status in (200, 503)
        conn.close()
        return ok
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTAL_")}
    env["PATH"] = os.pathsep.join([str(Path(PYTHON).parent), env.get("PATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    return env


# --- HTTP as a browser ------------------------------------------------------------------


class Http:
    """One donor's browser: cookies, one connection per request; every answer that is not a
    2xx (nor a redirect a form expects) is counted as an error."""

    errors: Counter[str]

    def __init__(self, port: int, donor: Donor, errors: Counter[str], lock: threading.Lock) -> None:
        self.port, self.donor, self.errors, self.lock = port, donor, errors, lock

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        ok: tuple[int, ...] = (),
    ) -> tuple[int, http.client.HTTPResponse, bytes]:
        sent = {"User-Agent": f"bench-ingest/{self.donor.number}"}
        if self.donor.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.donor.cookies.items())
        sent.update(headers or {})
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
        try:
            conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            data = response.read()
        except OSError as error:
            self._count(f"{method} {_route(path)}: {type(error).__name__}")
            raise
        finally:
            conn.close()
        for cookie in response.headers.get_all("Set-Cookie") or []:
            name, _, rest = cookie.partition("=")
            value = rest.split(";", 1)[0]
            if "max-age=0" in cookie.lower() or not value:
                self.donor.cookies.pop(name.strip(), None)
            else:
                self.donor.cookies[name.strip()] = value
        if not (200 <= response.status < 300 or response.status in ok):
            self._count(f"{method} {_route(path)}: {response.status}")
        return response.status, response, data

    def _count(self, key: str) -> None:
        with self.lock:
            self.errors[key] += 1

    def form(self, path: str, fields: dict[str, object]) -> tuple[int, bytes]:
        """POST a form; a 503 or 429 is counted, then sent again as a person would."""
        body = urllib.parse.urlencode(fields, doseq=True).encode()
        for attempt in range(6):
            status, _, data = self.request(
                "POST",
                path,
                body,
                {"Content-Type": "application/x-www-form-urlencoded"},
                ok=(302, 303),
            )
            if status not in (429, 503):
                break
            time.sleep(0.5 * (attempt + 1))
        return status, data


def _route(path: str) -> str:
    return re.sub(r"/(uploads|donations)/[A-Za-z0-9_-]{12,}", r"/\1/<id>", path)


def _hidden(page: bytes, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"'.encode(), page)
    if found is None:
        raise RuntimeError(f"no {name} in the page")
    return found.group(1).decode()


def enrol(http_: Http) -> None:
    """Log in, sign the consent (every module), open the upload page: as a browser."""
    donor = http_.donor
    _, _, page = http_.request("GET", "/login")
    status, _ = http_.form(
        "/login",
        {"csrf_token": _hidden(page, "csrf_token"), "email": donor.email, "password": PASSWORD},
    )
    if status != 303:
        raise RuntimeError(f"logging in answered {status}")
    _, _, page = http_.request("GET", "/consent")
    modules = [m.decode() for m in re.findall(rb'name="modules" value="([^"]*)"', page)]
    status, _ = http_.form(
        "/consent",
        {
            "csrf_token": _hidden(page, "csrf_token"),
            "template_id": _hidden(page, "template_id"),
            "modules": modules,
            "full_name": f"Bench Donor {donor.number}",
        },
    )
    if status != 200:
        raise RuntimeError(f"signing the consent answered {status}")
    status, _, page = http_.request("GET", "/donations/new")
    if status != 200:
        raise RuntimeError(f"the upload page answered {status}")
    donor.csrf = _hidden(page, "csrf_token")
    donor.submission = _hidden(page, "submission_key")


def upload_all(
    http_: Http, started: Callable[[], None], bad: list[str], latencies: list[float]
) -> None:
    """Every file of the donor: one tus creation-with-upload POST each."""
    donor = http_.donor
    metadata = "submission " + base64.b64encode(donor.submission.encode()).decode()
    for body in donor.files:
        started()
        sent = time.perf_counter()
        try:
            status, response, _ = http_.request(
                "POST",
                "/uploads/",
                body,
                {
                    "Tus-Resumable": "1.0.0",
                    "Upload-Length": str(len(body)),
                    "Upload-Metadata": metadata,
                    "Content-Type": "application/offset+octet-stream",
                    "X-CSRFToken": donor.csrf,
                },
            )
        except OSError:
            continue
        latencies.append(time.perf_counter() - sent)
        if status == 201:
            donor.created += 1
        offset = response.headers.get("Upload-Offset")
        if status == 201 and offset != str(len(body)):
            bad.append(f"donor {donor.number}: Upload-Offset {offset} of {len(body)}")
    if donor.created == 0:
        return  # every upload was refused: counted as errors, nothing to wait for
    _find_donation(http_)


def upload_archive(
    http_: Http, started: Callable[[], None], bad: list[str], latencies: list[float]
) -> None:
    """The donor's files as one ZIP archive, sent as the upload page sends a large file: a
    tus creation with the first piece, then PATCH requests of ``PIECE`` bytes each."""
    donor = http_.donor
    body = donor.archive
    metadata = "submission " + base64.b64encode(donor.submission.encode()).decode()
    headers = {
        "Tus-Resumable": "1.0.0",
        "Content-Type": "application/offset+octet-stream",
        "X-CSRFToken": donor.csrf,
    }
    started()
    sent = time.perf_counter()
    try:
        status, response, _ = http_.request(
            "POST",
            "/uploads/",
            body[:PIECE],
            {**headers, "Upload-Length": str(len(body)), "Upload-Metadata": metadata},
        )
        location = response.headers.get("Location", "")
        offset = int(response.headers.get("Upload-Offset") or 0)
        while status in (201, 204) and offset < len(body):
            status, response, _ = http_.request(
                "PATCH",
                urllib.parse.urlsplit(location).path,
                body[offset : offset + PIECE],
                {**headers, "Upload-Offset": str(offset)},
            )
            offset = int(response.headers.get("Upload-Offset") or offset)
    except OSError:
        return
    latencies.append(time.perf_counter() - sent)
    if status not in (201, 204) or offset != len(body):
        bad.append(f"donor {donor.number}: archive ended at {offset} of {len(body)} ({status})")
        return
    donor.created = len(donor.files)
    _find_donation(http_)


def _find_donation(http_: Http) -> None:
    _, _, page = http_.request("GET", "/")
    found = re.search(rb'href="/donations/([A-Za-z0-9_-]{12,})"', page)
    if found is None:
        raise RuntimeError(f"donor {http_.donor.number}: no donation on the home page")
    http_.donor.donation_id = found.group(1).decode()


def zip_of(files: list[bytes]) -> bytes:
    """A CD's DICOM folder zipped with the operating system's default (deflate)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for number, content in enumerate(files):
            archive.writestr(f"DICOM/ST000000/SE000000/IM{number:06d}", content)
    return out.getvalue()


UPLOADERS = {"files": upload_all, "zip": upload_archive}
SENT = {"files": "one upload per file", "zip": "one ZIP per donor"}


@dataclass
class Load:
    files: int
    seconds: float  # first byte sent -> last file processed
    upload_seconds: float  # first byte sent -> last upload answered
    errors: Counter[str]  # while uploading and polling
    setup_errors: Counter[str]  # while registering and signing the consent
    statuses: Counter[str]
    cpu: dict[str, float]  # CPU seconds used during the load, by process group
    latencies: list[float]  # seconds per upload request, as the donors saw them


def drive(
    port: int,
    donors: list[Donor],
    last_processed: Callable[[], float],
    timeout: float,
    groups: Callable[[], dict[str, list[int]]],
    profiler: Profiler | None = None,
    diagnose: Callable[[], str] = str,
    mode: str = "files",
) -> Load:
    """Enrol every donor, then all upload at once (each file one upload, or each donor one
    ZIP archive); poll status.json until nothing pends."""
    setup_errors: Counter[str] = Counter()
    lock = threading.Lock()
    browsers = [Http(port, donor, setup_errors, lock) for donor in donors]
    for donor in donors:
        donor.cookies.clear()
        donor.created = 0
    run_threads([lambda b=b: enrol(b) for b in browsers])
    errors: Counter[str] = Counter()
    for browser in browsers:
        browser.errors = errors
    first: list[float] = []

    def started() -> None:
        if not first:
            with lock:
                if not first:
                    first.append(time.time())

    bad: list[str] = []
    latencies: list[float] = []
    if profiler is not None:
        profiler.start()
    before = cpu_by_group(groups())
    try:
        upload = UPLOADERS[mode]
        run_threads([lambda b=b: upload(b, started, bad, latencies) for b in browsers])
        uploaded = time.time()
        if bad:
            errors.update(bad)
        try:
            statuses = poll_until_done(browsers, timeout)
        except StillPending as error:
            raise StillPending(f"{error}; {diagnose()}; HTTP errors {dict(errors)}") from None
        after = cpu_by_group(groups())
    finally:
        if profiler is not None:
            profiler.stop()
    if not any(donor.created for donor in donors):
        raise RuntimeError(f"the portal accepted no upload; HTTP errors {dict(errors)}")
    end = last_processed()
    cpu = {name: after[name] - before.get(name, 0.0) for name in after}
    return Load(
        files=sum(d.created for d in donors),
        seconds=end - first[0],
        upload_seconds=uploaded - first[0],
        errors=errors,
        setup_errors=setup_errors,
        statuses=statuses,
        cpu=cpu,
        latencies=sorted(latencies),
    )


class Profiler:
    """py-spy (not a dependency: `pip install py-spy`) on the web and worker process trees
    during the load only; collapsed stacks per process tree in ``folder``."""

    def __init__(self, folder: Path, stack: Stack, label: str, mode: str) -> None:
        self.folder, self.stack, self.label, self.mode = folder, stack, label, mode
        self.running: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        spy = shutil.which("py-spy", path=str(Path(PYTHON).parent)) or "py-spy"
        for name, pid in re.findall(
            r"^(\w+)\s*\| started \(pid (\d+)\)", self.stack.text(), re.MULTILINE
        ):
            if name == "beat":
                continue
            out = self.folder / f"{self.label}-{name}.txt"
            argv = [
                spy,
                "record",
                "--pid",
                pid,
                "--subprocesses",
                "--rate",
                "97",
                "--nonblocking",
                "--format",
                "raw",
                "--output",
                str(out),
            ]
            # cpu: threads holding the GIL only; wall: every thread, waiting ones too
            argv.append("--gil" if self.mode == "cpu" else "--idle")
            self.running.append(
                subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
        time.sleep(1.0)  # py-spy attaches

    def stop(self) -> None:
        for process in self.running:
            process.send_signal(signal.SIGINT)
        for process in self.running:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.running.clear()


def run_threads(jobs: list[Callable[[], None]]) -> None:
    failures: list[BaseException] = []

    def wrap(job: Callable[[], None]) -> None:
        try:
            job()
        except BaseException as error:  # noqa: BLE001 (re-raised in the main thread)
            failures.append(error)

    threads = [threading.Thread(target=wrap, args=(job,), daemon=True) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]


class StillPending(RuntimeError):
    pass


def poll_until_done(browsers: list[Http], timeout: float) -> Counter[str]:
    """One poller, round robin over the donors still pending (about 2 requests a second)."""
    import json

    deadline = time.monotonic() + timeout
    pending = [browser for browser in browsers if browser.donor.created]
    statuses: Counter[str] = Counter()
    while pending:
        if time.monotonic() > deadline:
            raise StillPending(f"{len(pending)} donations still pending after {timeout:.0f} s")
        browser = pending[0]
        _, _, body = browser.request("GET", f"/donations/{browser.donor.donation_id}/status.json")
        try:
            files = json.loads(body)["files"]
        except (ValueError, KeyError):
            files = None
        if (
            files is not None
            and len(files) >= browser.donor.created
            and not any(f["status"] in PENDING for f in files)
        ):
            statuses.update(f["status"] for f in files)
            pending.pop(0)
            continue
        pending.append(pending.pop(0))
        time.sleep(0.5)
    return statuses


# --- contenders -------------------------------------------------------------------------


class Cleanup:
    """Undo actions, run in reverse order exactly once (normal end, exception or Ctrl-C)."""

    def __init__(self) -> None:
        self._actions: list[tuple[str, Callable[[], None]]] = []

    def push(self, what: str, action: Callable[[], None]) -> None:
        self._actions.append((what, action))

    def pop(self) -> None:
        self.run(1)

    def run(self, count: int | None = None) -> None:
        count = len(self._actions) if count is None else count
        for _ in range(count):
            what, action = self._actions.pop()
            try:
                action()
            except Exception as error:  # noqa: BLE001 (cleaning up the rest matters more)
                print(f"cleanup: {what} failed: {error}", file=sys.stderr)


def pick_redis_dbs(client: redis.Redis, count: int) -> list[int]:
    # 0 and 1: the production defaults (rate limits, broker); 14 and 15: the test suite's.
    # Sharing a broker database with another stack lets its worker take our jobs.
    used = {int(k[2:]) for k in client.info("keyspace")}
    free = [n for n in range(2, 14) if n not in used]
    random.SystemRandom().shuffle(free)
    if len(free) < count:
        raise RuntimeError("no empty Redis database numbers left")
    return sorted(free[:count])


def prepare_instance(instance: Path) -> None:
    from donation_portal.cli.dev_setup import prepare_instance as prepare

    prepare(instance)


def portal_turn(
    args: argparse.Namespace,
    tmp: Path,
    donors: list[Donor],
    turn: int,
    redis_dbs: list[int],
    cleanup: Cleanup,
    mode: str,
) -> Load:
    """The production stack on a fresh PostgreSQL database; the load; everything stopped."""
    depth = 0
    database = f"portal_bench_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{database}"')

    def drop() -> None:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')

    cleanup.push(f"drop {database}", drop)
    depth += 1
    for number in redis_dbs:  # nothing left over from the previous turn
        with redis.Redis(REDIS_HOST, REDIS_PORT, db=number) as client:
            client.flushdb()
    instance = tmp / f"serve-{mode}-{turn}"
    prepare_instance(instance)
    cleanup.push(f"remove {instance}", lambda: shutil.rmtree(instance, ignore_errors=True))
    depth += 1
    port = free_port()
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}"
    env = base_env()
    env.update(
        {
            "PORTAL_ENV": "production",
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "PORTAL_INSTANCE_PATH": str(instance),
            "PORTAL_SECRET_KEY": secrets.token_urlsafe(48),
            "PORTAL_DATABASE_URL": url,
            "PORTAL_BROKER_URL": f"redis://{REDIS_HOST}:{REDIS_PORT}/{redis_dbs[0]}",
            "PORTAL_RATELIMIT_STORAGE_URI": f"redis://{REDIS_HOST}:{REDIS_PORT}/{redis_dbs[1]}",
            "WORKER_CONCURRENCY": str(args.workers),
            "WORKER_NAME": f"bench{turn}-{secrets.token_hex(3)}",
        }
    )
    stack = Stack(
        f"make serve #{turn}",
        [PYTHON, "-m", "donation_portal.cli.run_dev", "--procfile", str(ROOT / "Procfile")],
        env,
        tmp / f"serve-{mode}-{turn}.log",
    )
    cleanup.push(f"stop {stack.name}", stack.stop)
    depth += 1
    try:
        stack.wait_ready(port)
        publish_consent(env)
        create_donors(env, donors)

        def last_processed() -> float:
            with psycopg.connect(url.replace("+psycopg", "")) as conn:
                row = conn.execute(
                    "SELECT extract(epoch from max(updated_at)) FROM uploads WHERE state = 'done'"
                ).fetchone()
            return float(row[0])

        profiler = (
            Profiler(Path(args.profile), stack, f"serve-{mode}-{turn}", args.profile_mode)
            if args.profile
            else None
        )

        def groups() -> dict[str, list[int]]:
            pids = stack.named_pids()
            with psycopg.connect(PG_ADMIN_URL) as conn:
                backends = [
                    pid
                    for (pid,) in conn.execute(
                        "SELECT pid FROM pg_stat_activity WHERE datname = %s", (database,)
                    )
                ]
            return {
                "web": [pids["web"]],
                "worker": [pids["worker"]],
                "beat": [pids["beat"]],
                "run_dev": [-stack.process.pid],
                "postgres": [-pid for pid in backends],
                "load generator": [-os.getpid()],
            }

        def diagnose() -> str:
            with psycopg.connect(url.replace("+psycopg", "")) as conn:
                uploads = conn.execute(
                    "SELECT state, count(*) FROM uploads GROUP BY state"
                ).fetchall()
                files = conn.execute(
                    "SELECT status, count(*) FROM donated_files GROUP BY status"
                ).fetchall()
            return f"uploads by state {dict(uploads)}, files by status {dict(files)}"

        load = drive(port, donors, last_processed, args.timeout, groups, profiler, diagnose, mode)
        keep_log(args, stack.log)
        return load
    except BaseException:
        keep_log(args, stack.log)
        raise
    finally:
        for _ in range(depth):
            cleanup.pop()


def publish_consent(env: dict[str, str]) -> None:
    """Production publishes consent templates as an operator step (stewards' CLI)."""
    code = (
        "from donation_portal import create_app\n"
        "from donation_portal.adapters.request_session import get_session\n"
        "from donation_portal.cli.dev_setup import publish_default_template\n"
        "app = create_app()\n"
        "with app.app_context():\n"
        "    s = get_session(); publish_default_template(s); s.commit()\n"
    )
    subprocess.run([PYTHON, "-c", code], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)


def create_donors(env: dict[str, str], donors: list[Donor]) -> None:
    """The donors' accounts, created as an operator creates accounts (``create_user``, the
    address counting as confirmed): registering over HTTP needs the link it e-mails, and
    the production stack has no mailbox here (no SMTP)."""
    for donor in donors:
        donor.email = f"bench-donor-{donor.number}-{secrets.token_hex(3)}@bench.example"
    code = (
        "import sys\n"
        "from donation_portal import create_app\n"
        "from donation_portal.adapters.request_session import get_session\n"
        "from donation_portal.workflows.accounts import create_user\n"
        "app = create_app()\n"
        "with app.app_context():\n"
        "    s = get_session()\n"
        "    for email in sys.argv[2:]:\n"
        "        create_user(s, email, sys.argv[1], 'donor')\n"
        "    s.commit()\n"
    )
    emails = [donor.email for donor in donors]
    command = [PYTHON, "-c", code, PASSWORD, *emails]
    subprocess.run(command, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)


def dev_turn(
    args: argparse.Namespace, tmp: Path, donors: list[Donor], cleanup: Cleanup, mode: str
) -> Load:
    """The development stack (make run) in a fresh instance folder."""
    instance = tmp / f"run-{mode}"
    cleanup.push(f"remove {instance}", lambda: shutil.rmtree(instance, ignore_errors=True))
    port = free_port()
    env = base_env()
    env["PORTAL_INSTANCE_PATH"] = str(instance)
    stack = Stack(
        "make run",
        [PYTHON, "-m", "donation_portal.cli.run_dev", "--host", "127.0.0.1", "--port", str(port)],
        env,
        tmp / f"run-{mode}.log",
    )
    cleanup.push(f"stop {stack.name}", stack.stop)
    try:
        stack.wait_ready(port)
        create_donors(env, donors)

        def last_processed() -> float:
            import sqlite3

            conn = sqlite3.connect(f"file:{instance / 'portal.sqlite3'}?mode=ro", uri=True)
            try:
                (value,) = conn.execute(
                    "SELECT max(updated_at) FROM uploads WHERE state = 'done'"
                ).fetchone()
            finally:
                conn.close()
            return datetime.fromisoformat(value).replace(tzinfo=UTC).timestamp()

        profiler = (
            Profiler(Path(args.profile), stack, f"run-{mode}", args.profile_mode)
            if args.profile
            else None
        )

        def groups() -> dict[str, list[int]]:
            pids = stack.named_pids()
            return {
                "web": [pids["web"]],
                "worker": [pids["worker"]],
                "run_dev": [-stack.process.pid],
                "load generator": [-os.getpid()],
            }

        load = drive(port, donors, last_processed, args.timeout, groups, profiler, mode=mode)
        keep_log(args, stack.log)
        return load
    except BaseException:
        keep_log(args, stack.log)
        raise
    finally:
        cleanup.pop()
        cleanup.pop()


def keep_log(args: argparse.Namespace, log: Path) -> None:
    if args.keep_logs:
        Path(args.keep_logs).mkdir(parents=True, exist_ok=True)
        shutil.copy(log, Path(args.keep_logs) / log.name)


def baseline_turn(
    args: argparse.Namespace, tmp: Path, src: Path, key_file: Path, turn: int
) -> tuple[float, float]:
    """Seconds of the whole `python -m anonymize SRC DST --workers W` command, CPU seconds."""
    import resource

    dst = tmp / f"anonymized-{turn}"
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_before = usage.ru_utime + usage.ru_stime
    try:
        started = time.perf_counter()
        done = subprocess.run(
            [
                PYTHON,
                "-m",
                "anonymize",
                str(src),
                str(dst),
                "--key-file",
                str(key_file),
                "--pseudonym",
                "BENCH-DONOR",
                "--workers",
                str(args.workers),
            ],
            cwd=ROOT,
            env=base_env(),
            capture_output=True,
            text=True,
            check=False,
        )
        seconds = time.perf_counter() - started
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = usage.ru_utime + usage.ru_stime - cpu_before
    finally:
        shutil.rmtree(dst, ignore_errors=True)
    if done.returncode != 0 or ", rejected: 0" not in done.stdout:
        raise RuntimeError(f"anonymize failed ({done.returncode}): {done.stdout}{done.stderr}")
    return seconds, cpu


# --- main -------------------------------------------------------------------------------


def describe(load: Load) -> str:
    errors = sum(load.errors.values())
    setup = sum(load.setup_errors.values())
    statuses = ", ".join(f"{k} {v}" for k, v in sorted(load.statuses.items()))
    return (
        f"{load.files / load.seconds:7.2f} files/s  ({load.files} files in "
        f"{load.seconds:6.2f} s; uploads answered after {load.upload_seconds:6.2f} s; "
        f"HTTP errors: {errors} uploading, {setup} enrolling; {statuses})"
    )


def latency_line(load: Load) -> str:
    times = load.latencies
    if not times:
        return "no upload answered"
    p50, p95 = times[len(times) // 2], times[min(len(times) - 1, int(len(times) * 0.95))]
    return f"upload request p50 {1000 * p50:.0f} ms, p95 {1000 * p95:.0f} ms"


def cpu_line(load: Load) -> str:
    """The portal's CPU milliseconds per file (the load generator's shown apart)."""
    parts = [f"{name} {1000 * seconds / load.files:.0f}" for name, seconds in load.cpu.items()]
    total = sum(v for k, v in load.cpu.items() if k != "load generator")
    return f"{1000 * total / load.files:.0f} (" + ", ".join(parts) + ")"


def failures(load: Load) -> int:
    """HTTP errors, and files that ended otherwise than accepted (a portal failure)."""
    unexpected = sum(n for status, n in load.statuses.items() if status not in EXPECTED)
    return sum(load.errors.values()) + sum(load.setup_errors.values()) + unexpected


def list_errors(load: Load) -> None:
    for status, count in load.statuses.items():
        if status not in EXPECTED:
            say(f"  error: {count} files ended {status}")
    for what, count in load.setup_errors.items():
        say(f"  error while enrolling: {what} x{count}")
    for what, count in load.errors.items():
        say(f"  error while uploading: {what} x{count}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--donors", type=int, default=8)
    parser.add_argument("--files-per-donor", type=int, default=25)
    parser.add_argument("--runs", type=int, default=2, help="best of N turns each (default 2)")
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="Celery worker processes = anonymize --workers (default 2)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="seconds to wait for the files of one turn to be processed",
    )
    parser.add_argument(
        "--send",
        choices=("files", "zip", "both"),
        default="both",
        help="each file one tus upload (a folder chosen on the upload page), each donor's "
        "files one ZIP archive (a CD zipped), or both in turn (default)",
    )
    parser.add_argument("--skip-dev", action="store_true", help="no make run figure")
    parser.add_argument("--skip-serve", action="store_true", help="only the make run figure")
    parser.add_argument("--keep-logs", metavar="DIR", help="copy the stacks' logs here")
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="py-spy the web and worker processes during the load (collapsed "
        "stacks in DIR; slows the portal: figures are not comparable)",
    )
    parser.add_argument(
        "--profile-mode",
        choices=("cpu", "wall"),
        default="cpu",
        help="with --profile: threads holding the GIL (cpu, default) or every "
        "thread, waiting ones too (wall)",
    )
    args = parser.parse_args(argv)

    cleanup = Cleanup()
    previous = signal.signal(signal.SIGTERM, _interrupt)
    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    cleanup.push(f"remove {tmp}", lambda: shutil.rmtree(tmp, ignore_errors=True))
    try:
        return run(args, tmp, cleanup)
    except KeyboardInterrupt:
        say("interrupted; cleaning up")
        return 130
    finally:
        cleanup.run()
        signal.signal(signal.SIGTERM, previous)


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace, tmp: Path, cleanup: Cleanup) -> int:
    src = tmp / "src"
    paths = make_dataset(src, args.donors, args.files_per_donor)
    donors = [Donor(n, [p.read_bytes() for p in mine]) for n, mine in enumerate(paths)]
    modes = ("files", "zip") if args.send == "both" else (args.send,)
    for donor in donors:
        donor.archive = zip_of(donor.files) if "zip" in modes else b""
    files = sum(len(d.files) for d in donors)
    megabytes = sum(len(b) for d in donors for b in d.files) / 1e6
    key_file = tmp / "deid.key"
    from donation_portal.adapters.keyfiles import create_secret_file

    create_secret_file(key_file, 32)
    say(
        f"{args.donors} donors x {args.files_per_donor} CT slices = {files} files, "
        f"{megabytes:.0f} MB; {os.cpu_count()} cores; W = {args.workers} worker processes"
    )
    status = 0
    if not args.skip_serve:
        client = redis.Redis(REDIS_HOST, REDIS_PORT)
        redis_dbs = pick_redis_dbs(client, 2)
        client.close()

        def empty_redis() -> None:
            for number in redis_dbs:
                with redis.Redis(REDIS_HOST, REDIS_PORT, db=number) as db:
                    db.flushdb()

        cleanup.push("empty the Redis databases", empty_redis)
        portal: dict[str, list[Load]] = {mode: [] for mode in modes}
        plain: list[float] = []
        for turn in range(1, args.runs + 1):
            for mode in modes:
                load = portal_turn(args, tmp, donors, turn, redis_dbs, cleanup, mode)
                portal[mode].append(load)
                say(f"turn {turn} portal (make serve, PostgreSQL, {SENT[mode]}): {describe(load)}")
                say(f"  CPU ms per file: portal {cpu_line(load)}; {latency_line(load)}")
            seconds, cpu = baseline_turn(args, tmp, src, key_file, turn)
            plain.append(seconds)
            say(
                f"turn {turn} baseline (anonymize --workers {args.workers}): "
                f"{files / seconds:7.2f} files/s  ({seconds:6.2f} s); "
                f"CPU ms per file {1000 * cpu / files:.0f}"
            )
        best_plain = files / min(plain)
        for mode in modes:
            best = max(load.files / load.seconds for load in portal[mode])
            ratio = best / best_plain
            errors = sum(failures(load) for load in portal[mode])
            verdict = "PASS" if ratio >= TARGET_RATIO and errors == 0 else "FAIL"
            say(
                f"best of {args.runs}, {SENT[mode]}: portal {best:.2f} files/s, baseline "
                f"{best_plain:.2f} files/s, ratio {ratio:.2f} (target >= {TARGET_RATIO}), "
                f"errors {errors}: {verdict}"
            )
            for load in portal[mode]:
                list_errors(load)
            if verdict == "FAIL":
                status = 1
    for mode in modes if not args.skip_dev else ():
        load = dev_turn(args, tmp, donors, cleanup, mode)
        errors = failures(load)
        say(
            f"make run (SQLite, embedded broker, one worker, {SENT[mode]}): {describe(load)}: "
            f"{'PASS' if errors == 0 else 'FAIL'} (target 0 errors)"
        )
        say(f"  CPU ms per file: {cpu_line(load)}; {latency_line(load)}")
        list_errors(load)
        if errors:
            status = 1
    return status


if __name__ == "__main__":
    sys.stdout = io.TextIOWrapper(sys.stdout.buffer, line_buffering=True)
    sys.exit(main())
