"""A report as a list of blocks, rendered to Markdown and to one self-contained, escaped HTML page.

Both renderers read the same blocks, so the two files say the same thing. Every string that can come
from a user (study names, params, values, failure messages) is escaped by the renderer, never by callers.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Para:
    text: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    header: list[str]
    rows: list[list[Any]]


@dataclass
class Code:
    text: str


@dataclass
class Links:
    items: list[tuple[str, str]]  # (text, a path relative to the report), one bullet each


@dataclass
class Image:
    path: Path  # a PNG; embedded in the HTML, linked (relative to the report) in the Markdown
    alt: str


Block = Heading | Para | Bullets | Links | Table | Code | Image


def cell(value: Any) -> str:
    """A value as a table shows it: floats to 4 significant digits, None as a dash."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def to_markdown(blocks: list[Block], base: Path) -> str:
    """Markdown; a `<` in any text is backslash-escaped, since Markdown viewers render raw HTML."""
    out: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            out.append(f"{'#' * block.level} {_md(block.text)}")
        elif isinstance(block, Para):
            out.append(_md(block.text))
        elif isinstance(block, Bullets):
            out.append("\n".join(f"- {_md(item)}" for item in block.items))
        elif isinstance(block, Links):
            out.append("\n".join(f"- [{_md(text)}]({quote(href)})" for text, href in block.items))
        elif isinstance(block, Table):
            lines = ["| " + " | ".join(_md_cell(h) for h in block.header) + " |"]
            lines.append("|" + "---|" * len(block.header))
            lines += ["| " + " | ".join(_md_cell(cell(v)) for v in row) + " |" for row in block.rows]
            out.append("\n".join(lines))
        elif isinstance(block, Code):
            fence = "````" if "```" in block.text else "```"
            out.append(f"{fence}\n{block.text}\n{fence}")
        elif isinstance(block, Image):
            out.append(f"![{_md(block.alt)}]({_relative(block.path, base)})")
    return "\n\n".join(out) + "\n"


def to_html(blocks: list[Block], title: str) -> str:
    """One HTML page: styles inline, images as data: URIs, no scripts; `Links` point at files beside it."""
    body: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            body.append(f"<h{block.level}>{_h(block.text)}</h{block.level}>")
        elif isinstance(block, Para):
            body.append(f"<p>{_h(block.text)}</p>")
        elif isinstance(block, Bullets):
            body.append("<ul>" + "".join(f"<li>{_h(item)}</li>" for item in block.items) + "</ul>")
        elif isinstance(block, Links):
            links = "".join(
                f'<li><a href="{_h(quote(href))}">{_h(text)}</a></li>' for text, href in block.items
            )
            body.append(f"<ul>{links}</ul>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{_header(h)}</th>" for h in block.header)
            rows = "".join("<tr>" + "".join(_td(cell(v)) for v in row) + "</tr>" for row in block.rows)
            # tables fit the page: headers break after dots, long cells wrap; a table still too wide
            # (many params on a narrow window) scrolls inside its own box, the page keeps its width
            body.append(
                f'<div class="table"><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>'
            )
        elif isinstance(block, Code):
            body.append(f"<pre><code>{_h(block.text)}</code></pre>")
        elif isinstance(block, Image):
            data = base64.b64encode(block.path.read_bytes()).decode("ascii")
            body.append(f'<figure><img alt="{_h(block.alt)}" src="data:image/png;base64,{data}"></figure>')
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_h(title)}</title><style>{_STYLE}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem;color:#222;"
    "overflow-wrap:break-word}"
    "table{border-collapse:collapse;margin:0.5rem 0 1rem;font-size:0.875rem}"
    "th,td{border:1px solid #ccc;padding:0.2rem 0.4rem;text-align:left;font-variant-numeric:tabular-nums}"
    "th{background:#f3f3f3;vertical-align:bottom}"
    "pre{background:#f6f8fa;padding:0.75rem;overflow-x:auto;white-space:pre-wrap;overflow-wrap:anywhere}"
    "img{max-width:100%}div.table{max-width:100%;overflow-x:auto}"
    # cells wrap at spaces only where the table would not fit otherwise; a long one (params, a failure
    # message, a choice without spaces) wraps anywhere if it must
    "td.long{overflow-wrap:anywhere;min-width:6rem;max-width:24rem}"
)


LONG_CELL = 32  # characters: a shorter cell breaks only at spaces; a longer one anywhere, if it must


def _td(text: str) -> str:
    return f'<td class="long">{_h(text)}</td>' if len(text) > LONG_CELL else f"<td>{_h(text)}</td>"


def _header(text: str) -> str:
    """A column header that may break after a dot or an underscore (`models.optimizer.<wbr>weight_<wbr>decay`),
    so that a long param name does not widen its column past its values."""
    return _h(text).replace(".", ".<wbr>").replace("_", "_<wbr>").replace("/", "/<wbr>")


def _h(text: str) -> str:
    return html.escape(str(text), quote=True)


def _md(text: str) -> str:
    """Text as Markdown shows it, read raw or rendered: a `<` is backslash-escaped, so that no tag can start
    (`input.root=\\<folder>` renders as typed; an HTML entity would read `&lt;folder&gt;` in a terminal)."""
    return str(text).replace("\\", "\\\\").replace("<", "\\<").replace("\n", " ")


def _md_cell(text: str) -> str:
    return _md(text).replace("|", "\\|")


def _relative(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return path.as_posix()
