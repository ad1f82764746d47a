"""Pages of a long list, for the web pages and the API.

A request picks a page with ``?page=N`` (from 1) and its length with ``?per_page=M``
(DEFAULT_PER_PAGE rows, at most MAX_PER_PAGE): no page and no API reply grows with the
database. A value that is not a whole number counts as not given, and a number out of range
is brought into range, so no address makes the database fail on a huge offset.

A web page past the last shows the last, as the admin's account list does: a link kept from
a longer list still lands on rows. The API answers a page past the last with an empty list
instead, so that a script reading pages until one comes back empty stops; its ``Link`` header
(RFC 8288) names the first, previous, next and last pages, and ``X-Total-Count`` the rows.

A page showing two lists gives the second a ``prefix`` (``held_page``, ``held_per_page``).
The use cases read the rows (``workflows.listing``): this module only turns the request into
their ``limit`` and ``offset``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from flask import Response, jsonify, request, url_for

from donation_portal.web.limits import MAX_SQL_INTEGER

DEFAULT_PER_PAGE = 50
MAX_PER_PAGE = 200

T = TypeVar("T")
Fetch = Callable[[int, int], tuple[Sequence[T], int]]  # (limit, offset): rows, total


@dataclass(frozen=True)
class Page(Generic[T]):
    """The rows of page ``number`` (from 1) of a list of ``total`` rows, ``size`` a page."""

    items: list[T]
    number: int
    size: int
    total: int
    endpoint: str
    prefix: str = ""

    @property
    def pages(self) -> int:
        """How many pages the list has: one, even when it is empty."""
        return max(1, -(-self.total // self.size))

    @property
    def has_previous(self) -> bool:
        return self.number > 1

    @property
    def has_next(self) -> bool:
        return self.number < self.pages

    @property
    def previous(self) -> int:
        """The page before this one; the last, for an API page past it."""
        return min(self.number - 1, self.pages)

    def url(self, number: int) -> str:
        """The list's address showing page ``number``, the request's parameters kept."""
        args: dict[str, Any] = request.args.to_dict(flat=False)
        args[f"{self.prefix}page"] = [str(number)]
        if self.endpoint == request.endpoint:
            args = {**(request.view_args or {}), **args}
        return url_for(self.endpoint, **args)


def requested(prefix: str = "") -> tuple[int, int]:
    """The page number and page length the request asks for, brought into range."""
    number = request.args.get(f"{prefix}page", 1, type=int)
    size = request.args.get(f"{prefix}per_page", DEFAULT_PER_PAGE, type=int)
    return min(max(number, 1), MAX_SQL_INTEGER), min(max(size, 1), MAX_PER_PAGE)


def paginate(
    fetch: Fetch[T], prefix: str = "", *, nearest: bool = True, endpoint: str | None = None
) -> Page[T]:
    """The page of the list the request asks for; ``fetch(limit, offset)`` reads its rows
    and the list's length. ``nearest``: a page past the last is the last (web pages), else
    it is empty (the API). ``endpoint``: the list's page, when a form posted elsewhere shows
    it again with an error (its links must lead back to the list, not to the form's action).
    """
    number, size = requested(prefix)
    items, total = fetch(size, (number - 1) * size)
    last = max(1, -(-total // size))
    if nearest and number > last:
        number = last
        items, total = fetch(size, (number - 1) * size)
    return Page(list(items), number, size, total, endpoint or str(request.endpoint), prefix)


def json_page(page: Page[Any], items: Any) -> Response:
    """An API reply: ``items`` (the page's rows, dumped) as a JSON array, with the page
    links in ``Link`` and the number of rows of the whole list in ``X-Total-Count``."""
    response = jsonify(items)
    links = [(1, "first")]
    if page.has_previous:
        links.append((page.previous, "prev"))
    if page.has_next:
        links.append((page.number + 1, "next"))
    links.append((page.pages, "last"))
    response.headers["Link"] = ", ".join(f'<{page.url(n)}>; rel="{rel}"' for n, rel in links)
    response.headers["X-Total-Count"] = str(page.total)
    return response


def documented(operation: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI operation listing rows, with the page parameters and the page headers."""
    parameters = [
        {
            "name": "page",
            "in": "query",
            "description": "The page, from 1; past the last, an empty list",
            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_SQL_INTEGER, "default": 1},
        },
        {
            "name": "per_page",
            "in": "query",
            "description": f"Rows a page, at most {MAX_PER_PAGE}",
            "schema": {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_PER_PAGE,
                "default": DEFAULT_PER_PAGE,
            },
        },
    ]
    headers = {
        "Link": {
            "description": 'The first, previous, next and last pages (RFC 8288: rel="first", '
            '"prev", "next", "last"); read pages until there is no "next"',
            "schema": {"type": "string"},
        },
        "X-Total-Count": {
            "description": "How many rows the whole list has",
            "schema": {"type": "integer"},
        },
    }
    responses = dict(operation["responses"])
    responses["200"] = {**responses["200"], "headers": headers}
    return {
        **operation,
        "parameters": [*operation["parameters"], *parameters],
        "responses": responses,
    }
