"""A PDF page's identity outside the tables: ``(image_uri, page_index)`` and its ``#page=N`` name.

The tables key a page by ``(image_uri, page_index)`` (docs/schema.md): every page of a PDF shares the PDF's
``image_uri``. Anything that groups rows or names images for another tool (COCO, Label Studio, CVAT) must keep
that pair, or the pages of a PDF collapse onto one image. Tools know one name per image, so a page is named by
the standard PDF fragment (RFC 8118), ``doc.pdf#page=N`` with a 1-based ``N``; an ordinary image
(``page_index`` null) keeps its plain name. One module, so every export and import agrees on the spelling.
"""

from __future__ import annotations

from typing import Any, Mapping

#: the PDF open parameter (RFC 8118) naming a page, followed by the 1-based page number
PAGE_FRAGMENT = "#page="

#: ``(image_uri, page_index)``: one image of a run (``page_index`` None for an ordinary image)
PageKey = tuple[str, int | None]


def page_key(row: Mapping[str, Any]) -> PageKey:
    """The image an ``images``/``objects`` row belongs to (a row without ``page_index`` is an ordinary image)."""
    page = row.get("page_index")
    return row["image_uri"], None if page is None else int(page)


def page_order(row: Mapping[str, Any]) -> tuple[str, int]:
    """A sort key: URI order, a PDF's pages in page order."""
    page = row.get("page_index")
    return row["image_uri"], -1 if page is None else int(page)


def page_fragment(page_index: int | None) -> str:
    """``#page=N`` (``N = page_index + 1``) for a PDF page; empty for an ordinary image."""
    return "" if page_index is None else f"{PAGE_FRAGMENT}{int(page_index) + 1}"


def page_name(name: str, page_index: int | None) -> str:
    """``name`` for an ordinary image; ``name#page=N`` for a PDF page."""
    return name + page_fragment(page_index)


def split_page(name: str) -> tuple[str, int | None]:
    """The inverse of :func:`page_name`: ``doc.pdf#page=2`` -> ``("doc.pdf", 1)``; any other name -> ``(name, None)``."""
    base, found, number = name.rpartition(PAGE_FRAGMENT)
    if found and base and number.isdigit() and int(number) >= 1:
        return base, int(number) - 1
    return name, None
