"""A small HTML report: headings, text, tables and image grids, written as one self-contained folder."""

from __future__ import annotations

import html
import os
from dataclasses import dataclass, field
from pathlib import Path

from conceptlab.io import atomic_write_text

_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
img{image-rendering:pixelated;border:1px solid #ddd;max-width:100%}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f4f4f4}figure{display:inline-block;margin:0 1em 1em 0;vertical-align:top}
figcaption{font-size:.85em;color:#555;max-width:520px}code{background:#f4f4f4;padding:1px 4px}"""


@dataclass
class Report:
    """Collects sections and writes index.html into `folder`; image paths are relative to it."""

    title: str
    folder: Path
    parts: list[str] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.parts.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def text(self, text: str) -> None:
        self.parts.append(f"<p>{html.escape(text)}</p>")

    def code(self, text: str) -> None:
        self.parts.append(f"<pre><code>{html.escape(text)}</code></pre>")

    def image(self, path: str | Path, caption: str = "", width: int | None = None) -> None:
        rel = Path(os.path.relpath(Path(path).resolve(), Path(self.folder).resolve()))  # may lead up and across
        w = f' width="{width}"' if width else ""
        self.parts.append(f'<figure><img src="{html.escape(str(rel))}"{w}>'
                          f"<figcaption>{html.escape(caption)}</figcaption></figure>")

    def table(self, rows: list[dict], floats: str = "{:.3f}") -> None:
        if not rows:
            return
        cols = list(rows[0])
        fmt = lambda v: floats.format(v) if isinstance(v, float) else str(v)  # noqa: E731
        head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(fmt(r.get(c, '')))}</td>" for c in cols) + "</tr>"
                       for r in rows)
        self.parts.append(f"<table><tr>{head}</tr>{body}</table>")

    def write(self) -> Path:
        page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
                f"<style>{_CSS}</style></head><body><h1>{html.escape(self.title)}</h1>"
                + "\n".join(self.parts) + "</body></html>")
        return atomic_write_text(page, Path(self.folder) / "index.html")
