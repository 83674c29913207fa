"""The HTML pieces every page of hone's reports is built from: a table and an inline image."""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Sequence


def table(header: Sequence[str], rows: Iterable[Sequence[object]], *, escape: bool = True) -> str:
    """A ``<table>``; cells are escaped unless ``escape=False`` (cells that hold markup already)."""
    cell = html.escape if escape else (lambda text: text)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(str(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def image(png: bytes, alt: str) -> str:
    """A PNG inlined as a data URL: the page needs no other file."""
    encoded = base64.b64encode(png).decode("ascii")
    return f"<p><img alt='{html.escape(alt)}' src='data:image/png;base64,{encoded}'></p>"
