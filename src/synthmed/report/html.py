"""A small report model and its writer: one self-contained ``report.html`` plus ``metrics.json``.

The HTML opens from disk anywhere: images are embedded as base64 ``data:`` URIs, the CSS is inline,
there is no JavaScript, and a Content-Security-Policy forbids every external request.  All text is
HTML-escaped.  ``metrics.json`` holds every :class:`Table` and :class:`KeyValues` in
machine-readable form (raw numbers, confidence intervals as ``{"value", "ci_low", "ci_high"}``).
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import math
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synthmed.io_utils import atomic_path, write_json_atomic, write_text_atomic

__all__ = [
    "Block",
    "Estimate",
    "Figure",
    "KeyValues",
    "Report",
    "Section",
    "Table",
    "Text",
    "find_chromium",
    "format_ci",
    "format_value",
    "render_html",
    "render_screenshot",
    "report_to_json",
    "write_report",
]


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its 95% confidence interval, usable as a table cell.

    Attributes:
        value: the point estimate.
        low: lower bound of the 95% CI.
        high: upper bound of the 95% CI.
    """

    value: float
    low: float
    high: float

    def __str__(self) -> str:
        return format_ci(self.value, self.low, self.high)


@dataclass
class Table:
    """A table of values.

    Attributes:
        columns: column headers.
        rows: one sequence per row, as long as ``columns``; cells may be numbers, strings, None,
            booleans or :class:`Estimate`.
        caption: shown above the table (e.g. naming the feature space).
    """

    columns: Sequence[str]
    rows: Sequence[Sequence[Any]]
    caption: str = ""

    def __post_init__(self) -> None:
        for i, row in enumerate(self.rows):
            if len(row) != len(self.columns):
                raise ValueError(
                    f"Table {self.caption!r}: row {i} has {len(row)} cells, expected {len(self.columns)}"
                )


@dataclass
class Figure:
    """An image embedded into the report.

    Attributes:
        image: path to a PNG/JPEG/GIF/WebP file, or its bytes.
        caption: shown under the image.
        alt: alternative text (defaults to the caption).
    """

    image: str | os.PathLike[str] | bytes
    caption: str = ""
    alt: str = ""


@dataclass
class Text:
    """Plain paragraphs separated by blank lines; a paragraph whose lines all start with ``- ``
    becomes a bullet list.  Everything is escaped; no markup is interpreted.

    Attributes:
        text: the text.
    """

    text: str


@dataclass
class KeyValues:
    """A two-column list of named values (e.g. the feature space: extractor, weights SHA-256,
    preprocessing, sample counts).

    Attributes:
        items: name -> value (nested mappings/lists are shown as JSON).
        caption: shown above the list.
    """

    items: Mapping[str, Any]
    caption: str = ""


Block = Table | Figure | Text | KeyValues


@dataclass
class Section:
    """A titled, ordered group of blocks."""

    title: str
    blocks: list[Block] = field(default_factory=list)


@dataclass
class Report:
    """An ordered list of sections under one title."""

    title: str
    sections: list[Section] = field(default_factory=list)

    def add(self, title: str, *blocks: Block) -> Section:
        """Append a section and return it."""
        sec = Section(title, list(blocks))
        self.sections.append(sec)
        return sec


# ---------------------------------------------------------------------------------------------
# number formatting


def format_value(value: Any, digits: int = 3) -> str:
    """Format one cell for display.

    Integers are shown whole; floats with ``digits`` significant digits (at least to the unit),
    switching to scientific notation for very small or very large magnitudes.

    Args:
        value: a number, string, None, bool, or :class:`Estimate`.
        digits: significant digits for floats.

    Returns:
        The display string (not yet HTML-escaped); None and NaN show as an em dash.
    """
    if value is None:
        return "\u2014"
    if isinstance(value, Estimate):
        return format_ci(value.value, value.low, value.high, digits)
    if isinstance(value, bool) or hasattr(value, "dtype") and value.dtype == bool:
        return "yes" if value else "no"
    if isinstance(value, int) or (hasattr(value, "dtype") and getattr(value.dtype, "kind", "") in "iu"):
        return str(int(value))
    if isinstance(value, float) or hasattr(value, "dtype"):
        return _format_float(float(value), digits)
    return str(value)


def _format_float(x: float, digits: int) -> str:
    if math.isnan(x):
        return "\u2014"
    if math.isinf(x):
        return "\u221e" if x > 0 else "-\u221e"
    if x == 0:
        return "0"
    mag = abs(x)
    if mag < 1e-3 or mag >= 1e6:
        return f"{x:.{max(digits - 1, 0)}e}"
    decimals = max(digits - 1 - math.floor(math.log10(mag)), 0)
    return f"{x:.{decimals}f}"


def format_ci(value: float, low: float, high: float, digits: int = 3) -> str:
    """Format a value with its 95% CI, e.g. ``"1.23 [1.01, 1.45]"``.

    The bounds use the same number of decimals as the value so the three line up.

    Args:
        value: the point estimate.
        low: lower CI bound.
        high: upper CI bound.
        digits: significant digits of the point estimate.

    Returns:
        The formatted string.
    """
    v = _format_float(float(value), digits)
    if "e" in v or not math.isfinite(float(value)):
        return f"{v} [{_format_float(float(low), digits)}, {_format_float(float(high), digits)}]"
    decimals = len(v.split(".")[1]) if "." in v else 0
    lo, hi = (_fixed(float(b), decimals) for b in (low, high))
    return f"{v} [{lo}, {hi}]"


def _fixed(x: float, decimals: int) -> str:
    return _format_float(x, 3) if not math.isfinite(x) else f"{x:.{decimals}f}"


# ---------------------------------------------------------------------------------------------
# JSON


def _jsonable(value: Any) -> Any:
    """Convert a cell/item to plain JSON (NaN/inf -> None; numpy scalars/arrays -> Python)."""
    if isinstance(value, Estimate):
        return {"value": _jsonable(value.value), "ci_low": _jsonable(value.low), "ci_high": _jsonable(value.high)}
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if hasattr(value, "tolist"):  # numpy scalar or array
        return _jsonable(value.tolist())
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)


def report_to_json(report: Report) -> dict[str, Any]:
    """Every :class:`Table` and :class:`KeyValues` of ``report`` as a JSON-ready dict.

    Returns:
        ``{"title", "sections": [{"title", "blocks": [{"type": "table", "caption", "columns",
        "rows"} | {"type": "key_values", "caption", "items"}]}]}``.
    """
    sections = []
    for sec in report.sections:
        blocks: list[dict[str, Any]] = []
        for b in sec.blocks:
            if isinstance(b, Table):
                blocks.append({"type": "table", "caption": b.caption, "columns": [str(c) for c in b.columns],
                               "rows": [[_jsonable(c) for c in row] for row in b.rows]})
            elif isinstance(b, KeyValues):
                blocks.append({"type": "key_values", "caption": b.caption, "items": _jsonable(b.items)})
        sections.append({"title": sec.title, "blocks": blocks})
    return {"title": report.title, "sections": sections}


# ---------------------------------------------------------------------------------------------
# HTML

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0 auto;
max-width:1400px;padding:1.5em 2em;color:#1d1d1f;background:#fff;line-height:1.45}
h1{font-size:1.7em;border-bottom:2px solid #444;padding-bottom:.2em}
h2{font-size:1.3em;margin-top:2em;border-bottom:1px solid #ccc}
nav ol{columns:2;font-size:.95em} .meta{color:#666;font-size:.9em}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.92em}
caption{text-align:left;font-weight:600;padding:.3em 0;caption-side:top}
th,td{border:1px solid #ccc;padding:.25em .6em;vertical-align:top}
th{background:#f2f2f4;text-align:left} td.num{text-align:right;font-variant-numeric:tabular-nums}
tbody tr:nth-child(even){background:#fafafa}
table.kv th{width:16em} td code{word-break:break-all}
.scroll{max-width:100%;overflow-x:auto} table.kv table.kv{margin:0;font-size:1em} table.kv table.kv th{width:auto}
@media (max-width:900px){body{padding:1em} table{font-size:.85em} table.kv th{width:auto}}
figure{margin:1em 0} figure img{max-width:100%;height:auto;border:1px solid #ddd;image-rendering:pixelated}
figcaption{color:#444;font-size:.92em;margin-top:.3em}
"""

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

_MAGIC = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"),
          (b"GIF87a", "image/gif"), (b"GIF89a", "image/gif"))


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _data_uri(image: str | os.PathLike[str] | bytes) -> str:
    data = bytes(image) if isinstance(image, (bytes, bytearray)) else Path(image).read_bytes()
    mime = next((m for sig, m in _MAGIC if data.startswith(sig)), None)
    if mime is None and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        mime = "image/webp"
    if mime is None:
        src = "<bytes>" if isinstance(image, (bytes, bytearray)) else os.fspath(image)
        raise ValueError(f"Figure image {src} is not a PNG, JPEG, GIF or WebP file")
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, Estimate)) and not isinstance(v, bool) or (
        hasattr(v, "dtype") and getattr(v.dtype, "kind", "") in "iuf")


def _table_html(t: Table) -> str:
    head = "".join(f"<th>{_esc(c)}</th>" for c in t.columns)
    body = []
    for row in t.rows:
        cells = "".join(
            f'<td class="num">{_esc(format_value(c))}</td>' if _is_number(c) else f"<td>{_esc(format_value(c))}</td>"
            for c in row)
        body.append(f"<tr>{cells}</tr>")
    cap = f"<caption>{_esc(t.caption)}</caption>" if t.caption else ""
    # wide tables scroll inside their own box instead of running off a laptop-width page
    return f'<div class="scroll"><table>{cap}<thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _kv_value_html(v: Any, depth: int = 0) -> str:
    """A key-value cell: nested mappings as nested key-value tables (not raw JSON), lists of scalars
    comma-separated, hashes and paths as code."""
    if isinstance(v, Mapping) and v and depth < 3:
        rows = "".join(f"<tr><th>{_esc(k)}</th><td>{_kv_value_html(x, depth + 1)}</td></tr>" for k, x in v.items())
        return f'<table class="kv"><tbody>{rows}</tbody></table>'
    if isinstance(v, (list, tuple)) and all(not isinstance(x, (Mapping, list, tuple)) for x in v):
        return _esc(", ".join(format_value(x) for x in v)) if v else "none"
    if isinstance(v, (Mapping, list, tuple)):
        return f"<code>{_esc(json.dumps(_jsonable(v)))}</code>"
    if isinstance(v, str) and len(v) >= 32 and " " not in v:  # hashes, paths
        return f"<code>{_esc(v)}</code>"
    return _esc(format_value(v))


def _kv_html(kv: KeyValues) -> str:
    rows = [f"<tr><th>{_esc(k)}</th><td>{_kv_value_html(v)}</td></tr>" for k, v in kv.items.items()]
    cap = f"<caption>{_esc(kv.caption)}</caption>" if kv.caption else ""
    return f'<div class="scroll"><table class="kv">{cap}<tbody>{"".join(rows)}</tbody></table></div>'


def _text_html(t: Text) -> str:
    out = []
    for para in (p.strip() for p in t.text.replace("\r\n", "\n").split("\n\n")):
        if not para:
            continue
        lines = para.split("\n")
        if all(ln.lstrip().startswith("- ") for ln in lines):
            items = "".join(f"<li>{_esc(ln.lstrip()[2:])}</li>" for ln in lines)
            out.append(f"<ul>{items}</ul>")
        else:
            out.append("<p>" + "<br>".join(_esc(ln) for ln in lines) + "</p>")
    return "\n".join(out)


def _figure_html(f: Figure) -> str:
    alt = f.alt or f.caption
    cap = f"<figcaption>{_esc(f.caption)}</figcaption>" if f.caption else ""
    return f'<figure><img src="{_data_uri(f.image)}" alt="{_esc(alt)}">{cap}</figure>'


def _block_html(b: Block) -> str:
    if isinstance(b, Table):
        return _table_html(b)
    if isinstance(b, KeyValues):
        return _kv_html(b)
    if isinstance(b, Figure):
        return _figure_html(b)
    if isinstance(b, Text):
        return _text_html(b)
    raise TypeError(f"unknown report block type {type(b).__name__}")


def render_html(report: Report, generated: str | None = None) -> str:
    """The complete, self-contained HTML document for ``report``.

    Args:
        report: the report.
        generated: timestamp shown under the title (default: now, UTC, ISO 8601).

    Returns:
        The HTML text.
    """
    generated = generated or _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    toc = "".join(f'<li><a href="#s{i}">{_esc(s.title)}</a></li>' for i, s in enumerate(report.sections, 1))
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(report.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_esc(report.title)}</h1>", f'<p class="meta">Generated {_esc(generated)}</p>',
    ]
    if report.sections:
        parts.append(f"<nav><ol>{toc}</ol></nav>")
    for i, sec in enumerate(report.sections, 1):
        parts.append(f'<section id="s{i}"><h2>{_esc(sec.title)}</h2>')
        parts.extend(_block_html(b) for b in sec.blocks)
        parts.append("</section>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_report(report: Report, out_dir: str | os.PathLike[str], results: Mapping[str, Any] | None = None) -> Path:
    """Write ``report.html`` and ``metrics.json`` into ``out_dir``, each atomically.

    Args:
        report: the report.
        out_dir: output folder (created if missing).
        results: structured results stored under ``"results"`` in ``metrics.json`` (besides the
            report's tables), for programs that read the numbers back.

    Returns:
        Path of the written ``report.html``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = render_html(report)  # render fully (images read) before anything is written
    payload = report_to_json(report)
    if results is not None:
        payload["results"] = _jsonable(dict(results))
    write_json_atomic(out / "metrics.json", payload)
    write_text_atomic(out / "report.html", text)
    return out / "report.html"


# ---------------------------------------------------------------------------------------------
# headless browser check


def find_chromium() -> str | None:
    """Path of a Chromium executable on PATH (``chromium``, ``chromium-browser``), or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def render_screenshot(html_path: str | os.PathLike[str], png_path: str | os.PathLike[str],
                      width: int = 1280, height: int = 2000, timeout: float = 60.0) -> Path | None:
    """Render ``html_path`` in headless Chromium and save a screenshot.

    Chromium runs with a fresh throw-away profile and with networking features off, so the check
    also shows that the report needs nothing from outside.

    Args:
        html_path: the report to open.
        png_path: where to save the PNG (written atomically).
        width: window width in pixels.
        height: window height in pixels.
        timeout: seconds before the browser is killed.

    Returns:
        ``png_path``, or None when no Chromium is installed.

    Raises:
        RuntimeError: when Chromium fails, times out or writes no screenshot.
    """
    exe = find_chromium()
    if exe is None:
        return None
    url = Path(html_path).resolve().as_uri()
    out = Path(png_path)
    with tempfile.TemporaryDirectory(prefix="synthmed-chromium-") as profile, atomic_path(out) as tmp:
        shot = Path(profile) / "shot.png"
        cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--hide-scrollbars", f"--user-data-dir={Path(profile) / 'profile'}",
               f"--screenshot={shot}", f"--window-size={int(width)},{int(height)}", url]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as e:
            raise RuntimeError(f"{exe} did not finish rendering {html_path} within {timeout:g} s") from e
        if not shot.is_file() or shot.stat().st_size == 0:
            raise RuntimeError(f"{exe} wrote no screenshot of {html_path} (exit {proc.returncode}): "
                               f"{proc.stderr.strip()[-500:]}")
        shutil.copyfile(shot, tmp)
    return out
