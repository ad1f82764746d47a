"""The entry point of the celery command, like a WSGI file: it builds the Flask app.

    celery -A donation_portal.worker.main worker -Q ingest,maintenance [-B]
    celery -A donation_portal.worker.main beat
"""

from __future__ import annotations

from donation_portal import create_app
from donation_portal.worker import make_celery

flask_app = create_app()
app = make_celery(flask_app)
