"""A real PostgreSQL server restarts (``pg_ctl restart -m fast``) while donors upload.

Which fault, and why: ``test_database_outage.py`` imitates a restart on the shared server
(backends terminated, connections refused for a while), because restarting that server would
fail other runs. This test restarts a *real* server instead, a private throwaway cluster
(:mod:`.private_postgres`): the postmaster terminates every session (57P01), checkpoints and
exits; until the new one is up, connecting fails (refused, then "the database system is
starting up"); the web server's pooled connections are all dead afterwards.

Promises checked, as in the simulated outage under load: the server answers 503 with
``Retry-After`` when a request meets the restart, never 500 and never a hang; every upload
offset the server acknowledged is there right after each restart and at the end; once the
donors resume every upload completes, with parts that decrypt to exactly the bytes sent, and
each file waits for its job. PostgreSQL-only by nature: the test's ID says ``[postgresql]``
(``-k postgresql`` selects it, ``-k sqlite`` leaves it out), and it needs the server binaries
(skipped without them, a failure with CI=true), not the shared server.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import consent
from donation_portal.adapters import migrate
from donation_portal.adapters.db import make_engine
from donation_portal.cli.dev_setup import prepare_instance

from .conftest import Portal
from .private_postgres import PrivatePostgres, private_postgres
from .processes import WebServer
from .test_database_outage import (
    DEADLINE_SECONDS,
    DONORS,
    Donor,
    ServerError,
    Tally,
    assert_donors_finished,
    assert_every_acknowledged_upload_complete,
    upload_during,
)

pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")

# the restarts come when the donors have this share of all bytes acknowledged: by progress,
# not by the clock, so that on a fast or a slow machine both meet uploads in flight
RESTART_AT = (0.25, 0.60)
RESTART_WAIT_SECONDS = 30.0  # for the donors to reach the next restart's share
DEADLINE = min(DEADLINE_SECONDS, 45.0)  # donors give up after this; keeps the test under ~60 s


@dataclass
class Restarted:
    """A portal on a private server's database, and that server."""

    portal: Portal
    server: PrivatePostgres


@pytest.fixture(params=["postgresql"])
def restartable(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Restarted]:
    """As ``pg_portal`` (``_portal`` in conftest.py), on a private server: a migrated
    database, an instance folder with keys, the consent template published. The web server
    is killed before the PostgreSQL server stops, and that before its directory goes."""
    with private_postgres() as server:
        url = server.create_database("portal")
        migrate.upgrade(url)
        instance = tmp_path / "instance"
        prepare_instance(instance)
        engine = make_engine(url)
        portal = Portal(request.param, url, instance, tmp_path, engine, instance / "storage")
        try:
            with portal.sessions() as session:
                consent.publish_template(session, consent.default_template_spec())
                session.commit()
            yield Restarted(portal, server)
        finally:
            try:
                portal.kill_all()
            finally:
                engine.dispose()


@dataclass
class Restart:
    at_share: float
    seconds: float = 0.0
    count_503_before: int = 0  # the tally's 503s when the restart began
    acked_before: dict[str, int] = field(default_factory=dict)


class Restarter(threading.Thread):
    """Restarts the server when the acknowledged bytes reach each share of RESTART_AT; right
    after each restart, checks that every offset acknowledged before it is in the database."""

    def __init__(self, restarted: Restarted, tally: Tally) -> None:
        super().__init__(name="restarter", daemon=True)
        self.portal = restarted.portal
        self.server = restarted.server
        self.tally = tally
        self.total = sum(len(content) for content in tally.sources.values())
        self.stop = threading.Event()
        self.done: list[Restart] = []
        self.lost: list[str] = []  # acknowledged offsets missing right after a restart
        self.error: BaseException | None = None

    def share(self) -> float:
        with self.tally.lock:
            return sum(self.tally.acked.values()) / self.total

    def run(self) -> None:
        try:
            for at_share in RESTART_AT:
                deadline = time.monotonic() + RESTART_WAIT_SECONDS
                while self.share() < at_share and time.monotonic() < deadline:
                    if self.stop.wait(0.005):
                        return
                if self.share() < at_share:
                    return  # reported by the test: fewer restarts than planned
                with self.tally.lock:
                    restart = Restart(
                        at_share, 0.0, self.tally.statuses[503], dict(self.tally.acked)
                    )
                restart.seconds = self.server.restart()
                self.done.append(restart)
                for upload_id, acked in restart.acked_before.items():
                    offset = self.portal.upload(upload_id).offset
                    if offset < acked:
                        self.lost.append(
                            f"{upload_id}: acknowledged {acked}, {offset} after restart"
                        )
        except BaseException as error:  # noqa: BLE001 - reported by the test
            self.error = error

    def end(self) -> None:
        self.stop.set()
        self.join(RESTART_WAIT_SECONDS + 30)


def _logged(server: WebServer, correlations: list[str]) -> str:
    """gunicorn.log from the first line naming one of the correlation IDs (with its
    traceback), for the report of a 500."""
    text = server.log.read_text(encoding="utf-8", errors="replace")
    starts = [text.find(c) for c in correlations if c in text]
    if not starts:
        return server.output(120)
    start = text.rfind("\n", 0, min(starts)) + 1
    return "\n".join(text[start:].splitlines()[:120])


def test_acknowledged_uploads_survive_a_real_postgres_restart_under_load(
    restartable: Restarted,
) -> None:
    """Four donors send three files each in pieces through gunicorn (2 workers x 4
    threads, as the Procfile runs it) while the private PostgreSQL server is restarted
    twice (``pg_ctl restart -m fast``, at 25% and at 60% of the bytes acknowledged). Each
    restart fails requests with 503 + Retry-After, none with 500 or no reply; every
    acknowledged offset is durable (right after each restart, and at the end); every upload
    completes once the donors resume, its parts decrypt to the source bytes, and each file
    waits for its job."""
    portal, pg = restartable.portal, restartable.server
    server = portal.web(workers=2, threads=4)
    tally = Tally()
    stop_at = time.monotonic() + DEADLINE
    donors = [Donor(i, portal.donor_client(server), tally, stop_at) for i in range(DONORS)]
    for donor in donors:
        donor.create_all()
    restarter = Restarter(restartable, tally)
    upload_during(restarter, donors, stop_at)
    assert restarter.error is None, f"{restarter.error}\n{pg.log_tail()}"
    assert_donors_finished(donors, server)

    # the server really restarted, twice, while uploads were in flight, and each restart
    # failed requests (503 is what only a restart gives in this test)
    shares = [r.at_share for r in restarter.done]
    assert shares == list(RESTART_AT), f"restarts done at {shares}: {dict(tally.statuses)}"
    assert pg.restarts == len(RESTART_AT)
    ends = [r.count_503_before for r in restarter.done[1:]] + [tally.statuses[503]]
    per_restart = [end - r.count_503_before for r, end in zip(restarter.done, ends, strict=True)]
    assert all(per_restart), (
        f"a restart failed no request: 503s per restart {per_restart}, "
        f"restarts took {[round(r.seconds, 2) for r in restarter.done]} s, {dict(tally.statuses)}"
    )
    assert restarter.lost == [], "acknowledged, then lost in a restart:\n" + "\n".join(
        restarter.lost
    )

    assert_every_acknowledged_upload_complete(portal, tally)
    if tally.errors:
        correlations = [
            m.group(1) for e in tally.errors if (m := re.search(r"correlation (\w+)", e))
        ]
        raise ServerError(
            f"{len(tally.errors)} requests got 500 during the restarts: "
            + "; ".join(tally.errors[:5])
            + f"\n--- gunicorn.log:\n{_logged(server, correlations)}"
        )
