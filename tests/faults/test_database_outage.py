"""PostgreSQL drops the web server's connections while donors upload (tus, through gunicorn).

Which fault, and why: the suite, and other runs on this machine, share one PostgreSQL server,
so restarting it (``pg_ctlcluster ... restart``) would fail whatever else is running at that
moment. These tests hit only their own database, in the ways a restart shows to clients:

- backends are terminated (``pg_terminate_backend``): sessions die mid-transaction with
  SQLSTATE 57P01 (``admin_shutdown``, the code a server shutdown sends);
- for a while the database refuses new connections (``ALTER DATABASE ... ALLOW_CONNECTIONS
  false``), as a restarting server does; connections are always allowed again in ``finally``;
- a statement is made to wait (another connection holds ``LOCK TABLE ... ACCESS EXCLUSIVE``)
  and its backend is terminated while it waits: a connection dying at a known statement.

Promises checked: the server answers 503 with ``Retry-After`` when the database fails a
request, never 500 and never a hang; every upload the server acknowledged (201 created, 204
with an ``Upload-Offset``) is there afterwards, and once the donors resume every upload
completes, with parts that decrypt to exactly the bytes sent.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import pytest
from sqlalchemy import Connection, create_engine, make_url, text

from tests.conftest import postgres_admin_url

from .conftest import Portal
from .dicom import multiframe_bytes
from .http import Client, Reply, Tus
from .processes import WebServer

pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")
WAIT_SECONDS = 20.0


class ServerError(AssertionError):
    """The server answered 500 where the database was unavailable (503 was due)."""


def _database(portal: Portal) -> str:
    return make_url(portal.url).database or ""


def _admin() -> Any:
    return create_engine(postgres_admin_url(), isolation_level="AUTOCOMMIT")


def _terminate(conn: Connection, database: str, condition: str = "") -> int:
    """Terminate the database's backends (but the caller's) matching ``condition``."""
    killed = conn.execute(
        text(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            f"WHERE datname = :db AND pid <> pg_backend_pid() {condition}"
        ),
        {"db": database},
    ).scalar()
    return int(killed or 0)


@contextmanager
def _table_locked(portal: Portal, table: str) -> Iterator[None]:
    """Hold ACCESS EXCLUSIVE on ``table`` (every statement touching it waits) until exit."""
    engine = create_engine(portal.url)
    try:
        with engine.connect() as conn, conn.begin():
            conn.execute(text("SET LOCAL lock_timeout = '10s'"))
            conn.execute(text(f'LOCK TABLE "{table}" IN ACCESS EXCLUSIVE MODE'))
            yield
    finally:
        engine.dispose()


def _kill_waiters(conn: Connection, database: str, seconds: float, done: Callable[[], bool]) -> int:
    """Terminate the backends that wait for a lock, once one shows up (or ``done()``).

    ``conn`` must be in autocommit mode: inside a transaction pg_stat_activity is a
    snapshot taken at its first use, and a waiter arriving later would never be seen."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not done():
        killed = _terminate(conn, database, "AND wait_event_type = 'Lock'")
        if killed:
            return killed
        time.sleep(0.01)
    return 0


class Call(threading.Thread):
    def __init__(self, send: Callable[[], Reply]) -> None:
        super().__init__(daemon=True)
        self._send = send
        self.reply: Reply | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.reply = self._send()
        except BaseException as error:  # noqa: BLE001 - reported by the test
            self.error = error

    def result(self) -> Reply:
        self.join(WAIT_SECONDS)
        assert not self.is_alive(), "the request hung"
        if self.error is not None:
            raise self.error
        assert self.reply is not None
        return self.reply


# which tables each tus request reads or writes (the completing PATCH also hands over)
PROBES = {
    "create": ("users", "consents", "consent_events", "uploads", "donations", "scope_keys"),
    "patch": (
        "users", "uploads", "consents", "consent_events", "scope_keys", "upload_parts",
        "donations", "donated_files",
    ),
    "head": ("users", "uploads"),
}  # fmt: skip


@dataclass
class Probe:
    kind: str  # create, patch or head
    table: str
    url: str | None
    reply: Reply | None = None
    killed: int = 0

    @property
    def name(self) -> str:
        return f"{self.kind} ({self.table})"


def _probe(portal: Portal, admin: Connection, tus: Tus, content: bytes, probe: Probe) -> None:
    """Send the probe's request while its table is locked; kill the backend that waits."""
    send = {
        "create": lambda: tus.create(len(content)),
        "patch": lambda: tus.patch(probe.url, 0, content),
        "head": lambda: tus.head(probe.url),
    }[probe.kind]
    call = Call(send)
    with _table_locked(portal, probe.table):
        call.start()
        probe.killed = _kill_waiters(admin, _database(portal), 5.0, lambda: not call.is_alive())
    probe.reply = call.result()


def test_a_connection_killed_at_any_statement_of_a_tus_request_answers_503(
    pg_portal: Portal,
) -> None:
    """For each tus request (creation, a PATCH that completes the upload, HEAD) and each
    table it uses: the table is locked, the request sent, and the backend that waits for
    the lock is terminated. The reply must be 503 with Retry-After; a refused PATCH keeps
    nothing (offset 0, no part row, no object), and the donor can go on afterwards.

    The PATCH probes on uploads, consents, consent_events and scope_keys die inside
    ``resumable_uploads.begin_append``, whose ``finally: session.commit()`` then raises
    PendingRollbackError in place of the OperationalError (when SQLAlchemy has already
    seen the disconnect); the reply is 503 only because the error handler looks for the
    database error along the exception's cause/context chain."""
    portal = pg_portal
    server = portal.web()
    tus = Tus(portal.donor_client(server))
    content = multiframe_bytes(0.25)
    probes: list[Probe] = []
    admin_engine = _admin()
    try:
        with admin_engine.connect() as admin:
            for kind, tables in PROBES.items():
                for table in tables:
                    url = None
                    if kind != "create":
                        created = tus.create(len(content))
                        assert created.status == 201, created.text
                        url = created.headers["location"]
                    probe = Probe(kind, table, url)
                    probes.append(probe)
                    _probe(portal, admin, tus, content, probe)
    finally:
        admin_engine.dispose()

    outcomes = {p.name: p.reply.status if p.killed else "untouched" for p in probes if p.reply}
    untouched = [p.name for p in probes if not p.killed]
    assert not untouched, f"requests that never waited for their table: {outcomes}"
    errors = []
    for probe in probes:
        assert probe.reply is not None
        if probe.reply.status == 500:
            errors.append(f"{probe.name}: correlation {probe.reply.header('x-correlation-id')}")
        else:
            assert probe.reply.status == 503, (probe.name, probe.reply.status, probe.reply.text)
            assert probe.reply.header("retry-after"), probe.name
        if probe.kind == "patch" and probe.url is not None:
            upload_id = probe.url.rsplit("/", 1)[1]
            assert portal.upload(upload_id).offset == 0, probe.name
            assert portal.parts(upload_id) == [], probe.name
    # nothing half-done: no object but the recorded parts, and the donor goes on
    urls = [p.url for p in probes if p.url]
    recorded = {part.object_id for url in urls for part in portal.parts(url.rsplit("/", 1)[1])}
    assert portal.objects_in_storage() == recorded, "an object no row records"
    for url in urls:
        offset = tus.offset(url)
        done = tus.patch(url, offset, content[offset:])
        assert done.status == 204, done.text
        upload_id = url.rsplit("/", 1)[1]
        assert portal.parts_sha256(upload_id)[1] == hashlib.sha256(content).hexdigest()
    if errors:
        raise ServerError(f"500 instead of 503: {errors} (all outcomes: {outcomes})")


# --- under load ------------------------------------------------------------------------------

DONORS = 4
FILES_PER_DONOR = 3
PIECES = 4
FAULT_SECONDS = 6.0
DEADLINE_SECONDS = 90.0


@dataclass
class Tally:
    """What the donors saw."""

    statuses: Counter[int] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)  # no reply; 5xx but 503 + Retry-After
    errors: list[str] = field(default_factory=list)  # the 500s among them
    acked: dict[str, int] = field(default_factory=dict)  # upload ID -> highest offset acked
    sources: dict[str, bytes] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def saw(self, what: str, reply: Reply | None, error: BaseException | None = None) -> None:
        with self.lock:
            if reply is None:
                self.problems.append(f"{what}: no reply ({type(error).__name__}: {error})")
                return
            self.statuses[reply.status] += 1
            if reply.status >= 500 and (reply.status != 503 or not reply.header("retry-after")):
                seen = f"{what}: {reply.status} correlation {reply.header('x-correlation-id')}"
                self.problems.append(seen)
                if reply.status == 500:
                    self.errors.append(seen)


class Donor(threading.Thread):
    """Sends its uploads in pieces, as a tus client does: on 503 it waits a moment and
    sends again; after any other failure it asks the server's offset (HEAD) and resumes."""

    def __init__(self, index: int, client: Client, tally: Tally, stop_at: float) -> None:
        super().__init__(name=f"donor-{index}", daemon=True)
        self.index = index
        self.tus = Tus(client)
        self.tally = tally
        self.stop_at = stop_at
        self.urls: list[str] = []
        self.error: BaseException | None = None

    def call(self, what: str, send: Callable[[], Reply]) -> Reply | None:
        while time.monotonic() < self.stop_at:
            try:
                reply = send()
            except OSError as error:
                self.tally.saw(what, None, error)
                return None
            self.tally.saw(what, reply)
            if reply.status != 503:
                return reply
            time.sleep(0.05)
        return None

    def create_all(self) -> None:
        """Before the outage: the uploads are created (and acknowledged)."""
        for number in range(FILES_PER_DONOR):
            content = multiframe_bytes(0.5, number=self.index * 100 + number)
            created = self.tus.create(len(content))
            assert created.status == 201, created.text
            url = created.headers["location"]
            self.urls.append(url)
            upload_id = url.rsplit("/", 1)[1]
            self.tally.acked[upload_id] = 0
            self.tally.sources[upload_id] = content

    def run(self) -> None:
        try:
            for url in self.urls:
                self.send(url, self.tally.sources[url.rsplit("/", 1)[1]])
        except BaseException as error:  # noqa: BLE001 - reported by the test
            self.error = error

    def send(self, url: str, content: bytes) -> None:
        upload_id = url.rsplit("/", 1)[1]
        step = -(-len(content) // PIECES)
        offset = 0
        while offset < len(content) and time.monotonic() < self.stop_at:
            piece = content[offset : offset + step]
            reply = self.call("patch", lambda o=offset, p=piece: self.tus.patch(url, o, p))
            if reply is not None and reply.status == 204:
                offset = int(reply.headers["upload-offset"])
                with self.tally.lock:
                    assert offset >= self.tally.acked[upload_id], "the offset went back"
                    self.tally.acked[upload_id] = offset
                continue
            head = self.call("head", lambda: self.tus.head(url))
            if head is None or head.status != 200:
                return
            offset = int(head.headers["upload-offset"])


class Outage(threading.Thread):
    """For FAULT_SECONDS: every backend of the test database terminated every 50 ms; twice
    a window refusing connections for 0.7 s; twice a PATCH made to wait (``scope_keys``
    locked, which it reads for the upload's public key) and terminated while it waits."""

    def __init__(self, portal: Portal) -> None:
        super().__init__(name="outage", daemon=True)
        self.portal = portal
        self.database = _database(portal)
        self.stop = threading.Event()
        self.terminated = 0
        self.killed_waiting = 0
        self.error: BaseException | None = None
        self.admin = _admin()

    def allow(self, conn: Connection, allowed: bool) -> None:
        value = "true" if allowed else "false"
        conn.execute(text(f'ALTER DATABASE "{self.database}" ALLOW_CONNECTIONS {value}'))

    def run(self) -> None:
        started = time.monotonic()
        plan = [(0.0, "stall"), (0.25, "refuse"), (0.5, "stall"), (0.75, "refuse")]
        try:
            with self.admin.connect() as conn:
                while not self.stop.is_set() and time.monotonic() - started < FAULT_SECONDS:
                    if plan and time.monotonic() - started >= plan[0][0] * FAULT_SECONDS:
                        _, what = plan.pop(0)
                        if what == "refuse":
                            self.allow(conn, False)
                            try:
                                self.terminated += _terminate(conn, self.database)
                                self.stop.wait(0.7)
                            finally:
                                self.allow(conn, True)
                        else:  # a PATCH waits for the upload's key, and dies waiting
                            with _table_locked(self.portal, "scope_keys"):
                                self.killed_waiting += _kill_waiters(
                                    conn, self.database, 3.0, self.stop.is_set
                                )
                    self.terminated += _terminate(conn, self.database)
                    self.stop.wait(0.05)
        except BaseException as error:  # noqa: BLE001 - reported by the test
            self.error = error

    def end(self) -> None:
        self.stop.set()
        self.join(15)
        try:
            with self.admin.connect() as conn:
                self.allow(conn, True)  # whatever happened, the database takes connections
        finally:
            self.admin.dispose()


class Fault(Protocol):
    """A thread that harms the database while donors upload (Outage, a restart)."""

    def start(self) -> None: ...

    def end(self) -> None: ...


def upload_during(fault: Fault, donors: list[Donor], stop_at: float) -> None:
    """The donors upload while ``fault`` runs: started before them, ended after them."""
    fault.start()
    try:
        for donor in donors:
            donor.start()
        for donor in donors:
            donor.join(max(0.0, stop_at - time.monotonic()) + 5)
    finally:
        fault.end()


def assert_donors_finished(donors: list[Donor], server: WebServer) -> None:
    """No donor hung or failed on its own, and gunicorn lived through it."""
    assert not any(d.is_alive() for d in donors), "a donor hung"
    for donor in donors:
        assert donor.error is None, donor.error
    assert server.alive(), f"gunicorn died:\n{server.output()}"


def assert_every_acknowledged_upload_complete(portal: Portal, tally: Tally) -> None:
    """Every acknowledged upload is there, at least at its acknowledged offset, complete,
    with parts that decrypt to the bytes sent, its file waiting for its job; and no request
    failed otherwise than with 503 or 500 (500s are left to the caller, which reports them
    last, so that these checks hold even while the product answers some)."""
    for upload_id, acked in tally.acked.items():
        upload = portal.upload(upload_id)
        content = tally.sources[upload_id]
        assert upload.offset >= acked
        assert (upload.offset, upload.state) == (len(content), "queued"), upload_id
        assert portal.parts_sha256(upload_id) == (
            len(content),
            hashlib.sha256(content).hexdigest(),
        )
    by_upload = {row.upload_id: row.status for row in portal.files()}
    assert all(by_upload.get(u) == "waiting" for u in tally.acked), by_upload
    others = [p for p in tally.problems if p not in tally.errors]
    assert others == [], "\n".join(others[:20])


def test_acknowledged_uploads_survive_dropped_connections_under_load(pg_portal: Portal) -> None:
    """Four donors send three files each in pieces through gunicorn (2 workers x 4
    threads, as the Procfile runs it) while the database drops their connections
    (``Outage``). Every acknowledged offset is durable, every upload completes once the
    donors resume, the parts decrypt to the source bytes, each file waits for its job;
    failed requests got 503 with Retry-After, none got 500 or no reply."""
    portal = pg_portal
    server = portal.web(workers=2, threads=4)
    tally = Tally()
    stop_at = time.monotonic() + DEADLINE_SECONDS
    donors = [Donor(i, portal.donor_client(server), tally, stop_at) for i in range(DONORS)]
    for donor in donors:
        donor.create_all()
    outage = Outage(portal)
    upload_during(outage, donors, stop_at)
    assert outage.error is None, outage.error
    assert_donors_finished(donors, server)
    assert outage.terminated > 0
    assert outage.killed_waiting > 0, "no PATCH was caught waiting for its upload's key"
    assert tally.statuses[503] > 0, f"the outage never failed a request: {dict(tally.statuses)}"

    assert_every_acknowledged_upload_complete(portal, tally)
    if tally.errors:
        raise ServerError(
            f"{len(tally.errors)} requests got 500 (gunicorn.log has them by correlation ID; "
            f"{outage.killed_waiting} statements killed while waiting): "
            + "; ".join(tally.errors[:5])
        )
