"""A window on a long list: the rows of one page and how many rows the whole list has.

Every listing use case reads a page at a time, so no page or API reply grows with the
database; the web layer (``web.pagination``) turns the page a request asks for into
``limit`` and ``offset``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session


def window(
    session: Session, query: Select[*tuple[Any, ...]], limit: int, offset: int
) -> tuple[list[Any], int]:
    """The ``limit`` rows of ``query`` after the first ``offset`` (one entity per row, or
    the rows themselves when it selects several), and how many rows it has in all.

    ``query`` must be ordered by a unique key last, so that pages neither repeat nor skip
    a row."""
    total = session.scalar(select(func.count()).select_from(query.order_by(None).subquery()))
    page = query.limit(limit).offset(offset)
    rows = list(
        session.scalars(page) if len(query.column_descriptions) == 1 else session.execute(page)
    )
    return rows, total or 0
