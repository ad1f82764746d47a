"""The background workers: a Celery app over the Flask app's settings, and its tasks.

A layer beside ``web`` and ``cli``: it calls the use cases in ``workflows`` with the wiring in
``adapters``, one unit of work per task, inside the Flask app context. The web processes never
import it; they publish by task name (:mod:`donation_portal.adapters.jobs`).

    celery -A donation_portal.worker.main worker -Q ingest,maintenance
    celery -A donation_portal.worker.main beat
"""

from __future__ import annotations

from donation_portal.worker.app import make_celery

__all__ = ["make_celery"]
