"""Markdown -> sanitised HTML: markdown-it-py (CommonMark + tables, raw HTML off) then nh3
with an explicit allow-list. Everything the board shows as HTML goes through render()."""

from __future__ import annotations

import re

import nh3
from markdown_it import MarkdownIt

# Raw HTML in the source is shown as text; linkify stays off (it would need linkify-it and
# auto-links add nothing a [text](url) cannot do).
_md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
_md.enable(["table", "strikethrough"])

TAGS = {
    "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "del", "s",
    "code", "pre", "blockquote", "ul", "ol", "li", "a", "img",
    "table", "thead", "tbody", "tr", "th", "td",
}  # fmt: skip
ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title"},
    "ol": {"start"},
    "th": {"align"},
    "td": {"align"},
    "code": {"class"},
}
URL_SCHEMES = {"http", "https", "mailto"}
LINK_REL = "noopener noreferrer nofollow"

# Images only from our own upload route: no tracking pixels, nothing off-site.
UPLOAD_URL = re.compile(r"^/community/uploads/[0-9a-f]{32}\.(?:png|jpg|gif|webp)$")
_LANG_CLASS = re.compile(r"^language-[A-Za-z0-9_+-]{1,32}$")
_ALIGN = {"left", "right", "center"}


def _attribute_filter(tag: str, attr: str, value: str) -> str | None:
    if tag == "img" and attr == "src":
        return value if UPLOAD_URL.match(value) else None
    if tag == "a" and attr == "href":
        # Absolute URLs were already checked against URL_SCHEMES by nh3; relative ones must be
        # same-site paths or fragments (no "//host", no backslash tricks).
        v = value.strip()
        if v.startswith("//") or "\\" in v:
            return None
        return v
    if tag == "code" and attr == "class":
        return value if _LANG_CLASS.match(value) else None
    if attr == "align":
        return value if value in _ALIGN else None
    if tag == "ol" and attr == "start":
        return value if value.isdigit() and len(value) < 7 else None
    return value


def _relative(url: str) -> str | None:
    url = url.strip()
    if url.startswith(("/", "#", "?")) and not url.startswith("//"):
        return url
    return None


_cleaner = nh3.Cleaner(
    tags=TAGS,
    clean_content_tags={"script", "style", "iframe", "object", "embed", "svg", "math",
                        "template", "noscript", "textarea", "title", "xmp", "noembed"},
    attributes=ATTRIBUTES,
    attribute_filter=_attribute_filter,
    url_schemes=URL_SCHEMES,
    url_relative=_relative,
    link_rel=LINK_REL,
    strip_comments=True,
)  # fmt: skip


def render(source: str) -> str:
    """Sanitised HTML for a Markdown body. Safe to mark |safe in templates."""
    return _cleaner.clean(_md.render(source or ""))
