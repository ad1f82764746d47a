"""Consent texts are stored as Markdown and shown as HTML: rendered, then sanitised.

The text is published by stewards, not by the public, yet it is shown to every donor on a page
that asks for a signature: whatever a template holds, it must not run a script, load an image
that tracks readers, or restyle the page. markdown-it-py renders CommonMark without raw HTML;
nh3 then keeps only the tags a document needs, whatever the renderer let through. What the
donor signs stays the stored Markdown (its hash is the template ID): this is display only.
"""

from __future__ import annotations

import nh3
from markdown_it import MarkdownIt
from markupsafe import Markup

ALLOWED_TAGS = frozenset(
    {
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "p",
        "br",
        "hr",
        "ul",
        "ol",
        "li",
        "strong",
        "em",
        "a",
        "blockquote",
        "code",
        "pre",
    }
)
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "ol": {"start"}}
ALLOWED_URL_SCHEMES = frozenset({"https", "http", "mailto"})
# a link in a consent text leaves the portal: no referrer, no access to this window
LINK_REL = "noopener noreferrer nofollow"

_renderer = MarkdownIt("commonmark", {"html": False})


def render_markdown(text: str) -> Markup:
    """Safe HTML of ``text``: headings, paragraphs, lists, emphasis, links, quotes and code."""
    html = _renderer.render(text)
    cleaned = nh3.clean(
        html,
        tags=set(ALLOWED_TAGS),
        attributes={tag: set(names) for tag, names in ALLOWED_ATTRIBUTES.items()},
        url_schemes=set(ALLOWED_URL_SCHEMES),
        link_rel=LINK_REL,
        strip_comments=True,
    )
    return Markup(cleaned)  # noqa: S704 (sanitised by nh3 just above)
