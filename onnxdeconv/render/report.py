"""One self-contained HTML page that gathers a model's analyses, browsable layer by layer.

Every picture is embedded as a ``data:image/png;base64`` URI and the styles and the small check
script are inline, so the page opens from disk in any browser with no server and no network.
"""

from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure


@dataclass(frozen=True)
class Picture:
    """One embedded PNG and its caption (plain text; a newline breaks the line)."""

    png: bytes
    caption: str = ""
    alt: str = ""


@dataclass(frozen=True)
class Tile:
    """A projection beside the image patch its unit sees, as Zeiler & Fergus show them."""

    projection: Picture
    patch: Picture | None
    caption: str
    #: The same unit under guided backpropagation, shown between the two where given.
    guided: Picture | None = None


@dataclass
class Section:
    """A titled part of the page: text, full-width figures, a grid of tiles, or a note."""

    anchor: str
    title: str
    paragraphs: list[str] = field(default_factory=list)
    figures: list[Picture] = field(default_factory=list)
    tiles: list[Tile] = field(default_factory=list)
    #: Why the analysis could not run on this model; shown instead of its results.
    note: str = ""


@dataclass(frozen=True)
class LayerRow:
    """One row of the layers table."""

    alias: str
    tensor: str
    op: str
    shape: str
    receptive_field: str
    projectable: bool
    reason: str = ""
    #: Anchor of the layer's projection section, when the page has one.
    section: str = ""


@dataclass
class Page:
    """Everything the page shows, in order."""

    title: str
    summary: list[tuple[str, str]]
    layers: list[LayerRow]
    #: Sections before the per-layer ones (images, filters, occlusion, invariance).
    analyses: list[Section] = field(default_factory=list)
    #: One section per projected layer, in graph order.
    layer_sections: list[Section] = field(default_factory=list)


def figure_png(figure: Figure, dpi: int = 100) -> bytes:
    """Render a matplotlib figure to PNG bytes in memory and release it."""
    buffer = io.BytesIO()
    try:
        figure.savefig(buffer, format="png", dpi=dpi)
    finally:
        plt.close(figure)
    return buffer.getvalue()


def array_png(picture: np.ndarray) -> bytes:
    """Encode an HxW or HxWx3 RGB picture (uint8, or float in [0, 1]) as PNG bytes."""
    values = np.asarray(picture)
    if values.dtype.kind == "f":
        values = (np.clip(values, 0, 1) * 255).round()
    values = values.astype(np.uint8)
    if values.ndim == 3:
        values = cv2.cvtColor(values, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(values))
    if not ok:
        raise ValueError(f"cannot encode a picture of shape {values.shape} as PNG")
    return bytes(encoded.tobytes())


def data_uri(png: bytes) -> str:
    """The ``data:image/png;base64,...`` URI of PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def anchor_id(text: str) -> str:
    """A string safe as an HTML id and URL fragment."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-") or "x"


_STYLE = """
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, sans-serif; color: #222; background: #fafafa; }
nav { position: fixed; top: 0; left: 0; bottom: 0; width: 230px; overflow-y: auto;
      background: #20262e; color: #ddd; padding: 12px 10px; font-size: 13px; }
nav a { color: #cfe3ff; text-decoration: none; display: block; padding: 1px 4px; }
nav a:hover { background: #34404e; }
nav a.off { color: #8a96a3; }
nav h2 { font-size: 12px; text-transform: uppercase; color: #9ab; margin: 14px 0 4px; }
main { margin-left: 240px; padding: 14px 24px 60px; max-width: 1400px; }
h1 { font-size: 22px; margin: 4px 0 10px; }
section { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 10px 16px;
          margin: 16px 0; }
section h2 { font-size: 18px; margin: 4px 0 8px; }
table { border-collapse: collapse; font-size: 13px; }
td, th { border-bottom: 1px solid #e4e4e4; padding: 3px 8px; text-align: left;
         vertical-align: top; }
th { background: #f0f2f5; }
table.layers tr:target { background: #fff3bf; }
code { font-size: 12px; }
.no { color: #a33; }
.note { background: #fff4e5; border-left: 4px solid #f0a020; padding: 6px 10px; }
figure { margin: 8px 0; }
figure img { max-width: 100%; height: auto; }
figcaption { font-size: 12px; color: #555; white-space: pre-line; }
.tiles { display: flex; flex-wrap: wrap; gap: 10px; }
.tile { border: 1px solid #ddd; border-radius: 4px; padding: 4px; background: #fcfcfc; }
.tile img { width: 112px; height: 112px; object-fit: contain; image-rendering: pixelated;
            background: #eee; }
.tile .pair { display: flex; gap: 3px; }
.tile figcaption { max-width: 230px; }
"""

# Lets a headless browser (and the tests) read whether every picture decoded and no script failed.
_CHECK_SCRIPT = """
window.reportErrors = [];
window.onerror = function (message) { window.reportErrors.push(String(message)); };
window.addEventListener("load", function () {
  var images = document.images, loaded = 0;
  for (var i = 0; i < images.length; i++) {
    if (images[i].complete && images[i].naturalWidth > 0) { loaded++; }
  }
  document.body.dataset.imagesOk = loaded + "/" + images.length;
  document.body.dataset.errors = window.reportErrors.join(" | ");
});
"""


def _img(picture: Picture, css_class: str = "") -> str:
    cls = f' class="{css_class}"' if css_class else ""
    alt = html.escape(picture.alt or picture.caption.split("\n")[0], quote=True)
    return f'<img{cls} src="{data_uri(picture.png)}" alt="{alt}">'


def _figure(picture: Picture) -> str:
    caption = f"<figcaption>{html.escape(picture.caption)}</figcaption>" if picture.caption else ""
    return f"<figure>{_img(picture)}{caption}</figure>"


def _tile(tile: Tile) -> str:
    pictures = [tile.projection, tile.guided, tile.patch]
    pair = "".join(_img(picture) for picture in pictures if picture is not None)
    return (
        f'<figure class="tile"><div class="pair">{pair}</div>'
        f"<figcaption>{html.escape(tile.caption)}</figcaption></figure>"
    )


def _section(section: Section) -> str:
    parts = [
        f'<section id="{anchor_id(section.anchor)}">',
        f"<h2>{html.escape(section.title)}</h2>",
    ]
    parts += [f"<p>{html.escape(text)}</p>" for text in section.paragraphs]
    if section.note:
        parts.append(f'<p class="note">{html.escape(section.note)}</p>')
    parts += [_figure(picture) for picture in section.figures]
    if section.tiles:
        parts.append('<div class="tiles">' + "".join(_tile(t) for t in section.tiles) + "</div>")
    parts.append("</section>")
    return "\n".join(parts)


def _layers_table(rows: Sequence[LayerRow]) -> str:
    head = (
        "<tr><th>alias</th><th>tensor</th><th>op</th><th>shape</th><th>receptive field</th>"
        "<th>projectable</th></tr>"
    )
    body = []
    for row in rows:
        alias = html.escape(row.alias)
        if row.section:
            alias = f'<a href="#{anchor_id(row.section)}">{alias}</a>'
        status = (
            "yes" if row.projectable else f'<span class="no">no: {html.escape(row.reason)}</span>'
        )
        body.append(
            f'<tr id="{layer_anchor(row.alias)}"><td>{alias}</td>'
            f"<td><code>{html.escape(row.tensor)}</code></td><td>{html.escape(row.op)}</td>"
            f"<td>{html.escape(row.shape)}</td><td>{html.escape(row.receptive_field)}</td>"
            f"<td>{status}</td></tr>"
        )
    return f'<table class="layers">{head}{"".join(body)}</table>'


def layer_anchor(alias: str) -> str:
    """The id of a layer's row in the layers table."""
    return "layer-" + anchor_id(alias)


def _nav(report: Page) -> str:
    links = ['<a href="#summary">Summary</a>', '<a href="#layers">Layers table</a>']
    links += [
        f'<a href="#{anchor_id(s.anchor)}">{html.escape(s.title)}</a>' for s in report.analyses
    ]
    items = ["<h2>Report</h2>", *links, "<h2>Layers</h2>"]
    for row in report.layers:
        target = anchor_id(row.section) if row.section else layer_anchor(row.alias)
        marker = " ▸" if row.section else ""
        css = "" if row.projectable else ' class="off"'
        items.append(
            f'<a{css} href="#{target}" title="{html.escape(row.tensor, quote=True)}">'
            f"{html.escape(row.alias)}{marker}</a>"
        )
    return "<nav>" + "\n".join(items) + "</nav>"


def render_html(report: Page) -> str:
    """The whole page as one string: no external resources, every image inline."""
    summary = "".join(
        f"<tr><th>{html.escape(key)}</th><td>{html.escape(value)}</td></tr>"
        for key, value in report.summary
    )
    body = [
        f"<h1>{html.escape(report.title)}</h1>",
        f'<section id="summary"><h2>Summary</h2><table>{summary}</table></section>',
        '<section id="layers"><h2>Layers</h2><p>Every tensor a projection can start from; '
        "▸ in the navigation marks the layers projected below.</p>"
        f"{_layers_table(report.layers)}</section>",
        *(_section(s) for s in report.analyses),
        *(_section(s) for s in report.layer_sections),
    ]
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(report.title)}</title>\n"
        f"<style>{_STYLE}</style>\n<script>{_CHECK_SCRIPT}</script>\n</head>\n<body>\n"
        f"{_nav(report)}\n<main>\n" + "\n".join(body) + "\n</main>\n</body>\n</html>\n"
    )
