"""Fault tests of the ingest pipeline: real processes (gunicorn, Celery workers), committed
databases, and faults injected from outside (SIGKILL, dropped database connections, a full
volume, a racing withdrawal). See conftest.py for the fixtures."""
