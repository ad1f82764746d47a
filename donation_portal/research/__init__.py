"""Researcher access: profiles, purpose-matched requests, steward decisions, encrypted releases."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Register the research blueprints, API and commands (nothing yet)."""
