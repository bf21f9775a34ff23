"""The Jinja2 environment of the registry's pages and documents (console, model cards),
with the filters that format numbers the same way everywhere."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape


def number(value: Any, digits: int = 3) -> str:
    """A metric for people: ``—`` for a missing value."""
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def interval(value: Any, digits: int = 3) -> str:
    """``[low, high]`` of a bootstrap interval, or empty when there is none."""
    if not value:
        return ""
    low, high = value
    return f"[{low:.{digits}f}, {high:.{digits}f}]"


def histogram(value: dict[str, int] | None) -> str:
    if not value:
        return "—"
    return ", ".join(f"{label}: {count}" for label, count in sorted(value.items()))


def short(value: Any, length: int = 8) -> str:
    return "" if value is None else str(value)[:length]


@lru_cache
def environment() -> Environment:
    """One environment per process: the templates are package data of ``app``."""
    env = Environment(
        loader=PackageLoader("app", "templates"),
        autoescape=select_autoescape(["html", "j2.html"], default_for_string=False),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(number=number, interval=interval, histogram=histogram, short=short)
    return env


def render(template: str, **context: Any) -> str:
    return environment().get_template(template).render(**context)


def markdown_html(text: str) -> str:
    """Markdown (CommonMark with tables) as HTML; raw HTML in the text is escaped, never
    passed through, so names from the database cannot inject markup."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).enable("table").render(text)
