"""The Jinja2 environments of the registry's pages and documents (console, model cards),
with the filters that format numbers the same way everywhere.

HTML templates autoescape. Markdown templates (``*.md``) escape the same way: every
``{{ value }}`` is written as Markdown *text*, whatever it holds (a hospital's name, a
label of its histogram, a privacy setting), so that no value becomes a link, an image,
HTML, code, a table cell or a heading. Only numbers and what a filter returns as
:class:`Markdown` (formatted numbers, :func:`code` spans) are written as they are.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from jinja2 import Environment, PackageLoader, Undefined, select_autoescape


class Markdown(str):
    """Markdown a filter made from trusted parts: written into a document as it is."""


#: what opens or closes inline markup: escapes, code, emphasis and strikethrough, links
#: and images, autolinks and HTML, entities, table cells, (GFM) email autolinks; ``_``
#: between two letters or digits cannot (``weighted_mean`` stays as it is)
_INLINE = re.compile(r"[\\`*~\[\]<>&|@]|(?<![^\W_])_|_(?![^\W_])")
#: what a renderer with GFM's extended autolinks would link without any markup
_BARE_LINK = re.compile(r"(?<=[A-Za-z0-9]):(?=//)|(?<=[Ww][Ww][Ww])\.")
#: what starts a block (heading, list, quote, setext underline) where a value opens a line
_BLOCK_START = re.compile(r"^(?:[#+\-=]|\d+[.)])")


def markdown_text(value: object) -> Markdown:
    """``value`` as Markdown that renders to exactly its text, on one line.

    Line breaks and other control characters become spaces (a value cannot end a table
    row or start a block), and every character that could start markup is
    backslash-escaped (CommonMark: "any ASCII punctuation character may be
    backslash-escaped", and is then literal)."""
    text = " ".join(re.sub(r"[\x00-\x1f\x7f\u2028\u2029]", " ", str(value)).split())
    text = _INLINE.sub(lambda m: "\\" + m[0], text)
    text = _BARE_LINK.sub(lambda m: "\\" + m[0], text)
    return Markdown(_BLOCK_START.sub(lambda m: m[0][:-1] + "\\" + m[0][-1], text))


def code(value: object) -> Markdown:
    """``value`` as an inline code span that no backtick in it can close early (not for
    table cells: GFM splits cells at ``|`` even inside code)."""
    text = " ".join(str(value).split())
    if not text:
        return Markdown("")
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return Markdown(f"{fence}{pad}{text}{pad}{fence}")


def _markdown_finalize(value: Any) -> Any:
    """What a Markdown template writes for ``{{ value }}``: text escaped (see module)."""
    if isinstance(value, Markdown | Undefined | int | float) or value is None:
        return value
    return markdown_text(value)


def number(value: Any, digits: int = 3) -> str:
    """A metric for people: ``—`` for a missing value."""
    if value is None:
        return Markdown("—")
    if isinstance(value, float):
        return Markdown(f"{value:.{digits}f}")
    if isinstance(value, int):
        return Markdown(str(value))
    return str(value)


def interval(value: Any, digits: int = 3) -> str:
    """``[low, high]`` of a bootstrap interval, or empty when there is none."""
    if not value:
        return ""
    low, high = value
    return Markdown(f"[{low:.{digits}f}, {high:.{digits}f}]")


def histogram(value: dict[str, int] | None) -> str:
    if not value:
        return "—"
    return ", ".join(f"{label}: {count}" for label, count in sorted(value.items()))


def short(value: Any, length: int = 8) -> str:
    return "" if value is None else str(value)[:length]


@lru_cache
def environment(markdown: bool = False) -> Environment:
    """One environment per kind and process: the templates are package data of ``app``."""
    env = Environment(
        loader=PackageLoader("app", "templates"),
        autoescape=select_autoescape(["html", "j2.html"], default_for_string=False),
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=_markdown_finalize if markdown else None,
    )
    env.filters.update(number=number, interval=interval, histogram=histogram, short=short)
    if markdown:
        env.filters["code"] = code
    return env


def render(template: str, **context: Any) -> str:
    """Render a console page (``.html``) or a Markdown document (``.md``)."""
    return environment(template.endswith(".md")).get_template(template).render(**context)


def markdown_html(text: str) -> str:
    """Markdown (CommonMark with tables) as HTML. Raw HTML in the text is escaped, never
    passed through, and links, images and autolinks are not made at all: the registry's
    documents have none of their own, so none can come from the data in them. A table
    column's alignment is a class (``align-right``), not an inline style, which the
    console's Content-Security-Policy refuses."""
    from markdown_it import MarkdownIt

    parser = MarkdownIt("commonmark", {"html": False}).enable("table")
    parser.disable(["link", "image", "autolink"])
    tokens = parser.parse(text)
    for token in tokens:
        style = token.attrs.pop("style", None)
        if isinstance(style, str) and style.startswith("text-align:"):
            token.attrSet("class", f"align-{style.removeprefix('text-align:')}")
    return str(parser.renderer.render(tokens, parser.options, {}))
