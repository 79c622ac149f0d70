"""HTML templates (Jinja, autoescaped), the stylesheet and the script of the reader web app.

They live in Python strings so the package needs no data files.  The script is served from
``/assets/reader.js`` (the Content-Security-Policy allows no inline script); the page hands it
the plane layout through a ``data-layout`` attribute.  The script draws the current slice of each
plane's mosaic on a canvas, scaled by the zoom (CSS size, nearest-neighbour) and mapped through
the reader's window/level (a 256-entry lookup table on the canvas pixels); zoom and window/level
are kept in the tab's ``sessionStorage`` from one image to the next.  No external script.
"""

from __future__ import annotations

BASE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
{% block head %}{% endblock %}
<title>{{ title }}</title>
<link rel="stylesheet" href="/assets/reader.css">
</head><body class="{{ body_class }}">
{% block body %}{% endblock %}
</body></html>
"""

READ = """{% extends "base.html" %}
{% block head %}<script src="/assets/reader.js" defer></script>{% endblock %}
{% block body %}
<header>
  <h1>Real or synthetic?</h1>
  <div class="progress" id="progress">
    <progress max="{{ total }}" value="{{ position }}"></progress>
    <span id="progress-text">Image {{ position + 1 }} of {{ total }}</span>
  </div>
</header>
<main>
  <div class="toolbar" id="toolbar">
    <span class="group" role="group" aria-label="Zoom">Zoom
      <button type="button" data-zoom="fit" title="fit the window (F)">Fit</button>
      <button type="button" data-zoom="1" title="one image pixel per screen pixel">1&times;</button>
      <button type="button" data-zoom="2">2&times;</button>
      <button type="button" data-zoom="4">4&times;</button>
      <output id="zoom-value">fit</output></span>
    <label class="group" title="window width: narrower = more contrast (C / X)">Window
      <input type="range" id="window-width" min="1" max="512" value="256"></label>
    <label class="group" title="window centre: lower = brighter (B / D)">Level
      <input type="range" id="window-level" min="0" max="255" value="128"></label>
    <output id="window-value">W 256 L 128</output>
    <button type="button" id="reset-view" title="fit, full window (0)">Reset view</button>
  </div>
  <div class="viewer" id="viewer" data-layout="{{ layouts | tojson | forceescape }}">
  {% for lay in layouts %}
    {% set edge = edges[loop.index0] %}
    <figure class="plane{% if loop.first %} active{% endif %}" data-plane="{{ lay.name }}">
      <div class="frame">
        {% if edge %}<span class="edge top">{{ edge[2] }}</span><span class="edge left">{{ edge[0] }}</span>{% endif %}
        <div class="canvas-wrap"><canvas width="{{ lay.cols }}" height="{{ lay.rows }}"></canvas></div>
        {% if edge %}<span class="edge right">{{ edge[1] }}</span><span class="edge bottom">{{ edge[3] }}</span>{% endif %}
      </div>
      <img class="mosaic" src="{{ image_urls[loop.index0] }}" alt="" hidden>
      <figcaption>
        {% if lay.name != "image" %}<span class="plane-name">{{ lay.name | capitalize }}</span>
        <span class="slice">slice {{ (lay.n_slices - 1) // 2 + 1 }} / {{ lay.n_slices }}</span>{% endif %}
      </figcaption>
      {% if lay.n_slices > 1 %}
      <input type="range" class="slice-range" min="0" max="{{ lay.n_slices - 1 }}" value="{{ (lay.n_slices - 1) // 2 }}"
             aria-label="{{ lay.name }} slice">
      {% endif %}
    </figure>
  {% endfor %}
  </div>
  {% if convention %}<p class="orientation" id="orientation">Orientation: {{ convention }}.
  R/L, A/P, S/I: the patient's right/left, anterior/posterior, superior/inferior.</p>{% endif %}
  <form method="post" action="{{ answer_url }}" id="answer-form" autocomplete="off">
    <input type="hidden" name="item" value="{{ item }}">
    <input type="hidden" name="position" value="{{ position }}">
    <input type="hidden" name="elapsed_ms" value="">
    <fieldset class="confidence">
      <legend>Confidence (optional)</legend>
      {% for level, text in confidence_levels %}
      <label><input type="radio" name="confidence" value="{{ level }}"><kbd>{{ level }}</kbd> {{ text }}</label>
      {% endfor %}
    </fieldset>
    <div class="answers">
      <button type="submit" name="answer" value="real" id="answer-real"><kbd>R</kbd> Real</button>
      <button type="submit" name="answer" value="synthetic" id="answer-synthetic"><kbd>S</kbd> Synthetic</button>
    </div>
  </form>
  <p class="help">Keys: <kbd>R</kbd> real, <kbd>S</kbd> synthetic, <kbd>1</kbd>&ndash;<kbd>5</kbd> confidence
  {%- if layouts | length > 1 %}, <kbd>&uarr;</kbd>/<kbd>&darr;</kbd> or the mouse wheel: next/previous slice,
  <kbd>Page Up</kbd>/<kbd>Page Down</kbd>: 5 slices, <kbd>&larr;</kbd>/<kbd>&rarr;</kbd>: choose the plane{% endif %}.
  View: <kbd>+</kbd>/<kbd>-</kbd> zoom, <kbd>F</kbd> fit, <kbd>C</kbd>/<kbd>X</kbd> more/less contrast,
  <kbd>B</kbd>/<kbd>D</kbd> brighter/darker, <kbd>0</kbd> reset; drag on an image: window (left/right) and
  level (up/down), <kbd>Shift</kbd>+drag: move a zoomed image. Zoom and window stay as set for the next images.
  Your answer is saved before the next image appears; you can close the window and come back to this
  link at any time.</p>
</main>
{% endblock %}
"""

DONE = """{% extends "base.html" %}
{% block body %}
<main class="message">
  <h1>Thank you</h1>
  <p id="done">All {{ total }} images are answered. You can close this window.</p>
</main>
{% endblock %}
"""

MESSAGE = """{% extends "base.html" %}
{% block body %}
<main class="message">
  <h1>{{ heading }}</h1>
  <p>{{ message }}</p>
  {% if link %}<p><a href="{{ link }}">Continue with the study</a></p>{% endif %}
</main>
{% endblock %}
"""

ADMIN = """{% extends "base.html" %}
{% block head %}<meta http-equiv="refresh" content="30">{% endblock %}
{% block body %}
<main class="admin">
  <h1>Reader study: progress</h1>
  <p>{{ total }} images per reader. This page refreshes every 30 s.
  <a href="{{ csv_url }}" id="export-csv">Export all answers (CSV)</a></p>
  <table>
    <thead><tr><th>Reader</th><th>Answered</th><th>Progress</th><th>First answer (UTC)</th>
    <th>Last answer (UTC)</th><th>Personal link</th></tr></thead>
    <tbody>
    {% for r in rows %}
      <tr><td>{{ r.name }}</td><td class="num">{{ r.answered }} / {{ total }}</td>
      <td><progress max="{{ total }}" value="{{ r.answered }}"></progress></td>
      <td>{{ r.first or "" }}</td><td>{{ r.last or "" }}</td>
      <td><code>{{ r.link }}</code></td></tr>
    {% endfor %}
    </tbody>
  </table>
</main>
{% endblock %}
"""

CSS = """
:root{color-scheme:dark}
body{margin:0;background:#111;color:#ddd;font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif}
header{display:flex;align-items:center;justify-content:space-between;padding:.6em 1.5em;background:#1c1c1e;
border-bottom:1px solid #333}
h1{font-size:1.3em;margin:.2em 0}
.progress{display:flex;align-items:center;gap:.8em;font-variant-numeric:tabular-nums}
progress{width:16em;height:.8em}
main{padding:1em 1.5em}
.viewer{display:flex;flex-wrap:wrap;gap:1.2em;align-items:flex-start;justify-content:center;min-height:200px}
.plane{margin:0;padding:.4em;border:2px solid #333;border-radius:6px;background:#000;display:flex;
flex-direction:column;align-items:center}
.plane.active{border-color:#4a90d9}
.frame{display:grid;grid-template-columns:auto auto auto;grid-template-areas:". top ." "left wrap right" ". bottom .";
align-items:center;justify-items:center}
.edge{font-size:.75em;font-weight:600;color:#d9b84a;line-height:1;padding:.2em}
.edge.top{grid-area:top}
.edge.bottom{grid-area:bottom}
.edge.left{grid-area:left}
.edge.right{grid-area:right}
.canvas-wrap{grid-area:wrap;overflow:auto;max-width:calc(100vw - 6em);max-height:calc(100vh - 7em)}
.plane canvas{image-rendering:pixelated;background:#000;display:block;cursor:crosshair}
.toolbar{display:flex;flex-wrap:wrap;gap:.5em 1.4em;align-items:center;justify-content:center;margin:0 auto .9em;
font-size:.9em;color:#bbb}
.toolbar .group{display:inline-flex;align-items:center;gap:.35em}
.toolbar button{padding:.15em .6em;border-radius:4px;border:1px solid #555;background:#2c2c2e;color:#eee;cursor:pointer}
.toolbar button.on{border-color:#4a90d9;background:#23364d}
.toolbar output{font-variant-numeric:tabular-nums;min-width:5.5em;color:#ddd}
.toolbar input[type=range]{width:8em}
.orientation{max-width:46em;margin:.6em auto 0;color:#999;font-size:.85em;text-align:center}
.plane figcaption{display:flex;justify-content:space-between;width:100%;font-size:.85em;color:#aaa;
padding:.3em .2em 0;font-variant-numeric:tabular-nums}
.plane input[type=range]{width:100%}
form{max-width:46em;margin:1.2em auto 0;text-align:center}
fieldset.confidence{border:1px solid #333;border-radius:6px;margin:0 0 1em;padding:.4em .8em}
fieldset.confidence label{margin:0 .7em;white-space:nowrap;cursor:pointer}
.answers{display:flex;gap:1.5em;justify-content:center}
.answers button{font-size:1.25em;padding:.6em 2.2em;border-radius:6px;border:1px solid #555;background:#2c2c2e;
color:#eee;cursor:pointer}
.answers button:hover:enabled{background:#3a3a3c}
.answers button:disabled{opacity:.45;cursor:wait}
kbd{border:1px solid #666;border-radius:3px;padding:0 .3em;font-size:.85em;background:#222;color:#eee}
.help{max-width:46em;margin:1.2em auto;color:#999;font-size:.88em;text-align:center}
.message{max-width:40em;margin:4em auto;text-align:center}
.message a{color:#8ab4f8}
.admin table{border-collapse:collapse;margin-top:1em}
.admin th,.admin td{border:1px solid #444;padding:.3em .7em;text-align:left}
.admin td.num{text-align:right;font-variant-numeric:tabular-nums}
.admin a{color:#8ab4f8} .admin code{font-size:.85em}
.error{color:#f28b82}
"""

JS = r"""
"use strict";
(function () {
  var viewer = document.getElementById("viewer");
  var form = document.getElementById("answer-form");
  if (!viewer || !form) { return; }
  var layouts = JSON.parse(viewer.getAttribute("data-layout"));
  var figures = Array.prototype.slice.call(viewer.querySelectorAll("figure.plane"));
  var buttons = Array.prototype.slice.call(form.querySelectorAll("button[name=answer]"));
  var zoomButtons = Array.prototype.slice.call(document.querySelectorAll("#toolbar button[data-zoom]"));
  var zoomOut = document.getElementById("zoom-value"), wlOut = document.getElementById("window-value");
  var widthInput = document.getElementById("window-width"), levelInput = document.getElementById("window-level");
  var resetButton = document.getElementById("reset-view");
  var active = 0, loaded = 0, submitting = false, shownAt = null;
  buttons.forEach(function (b) { b.disabled = true; });

  // ---- view state: zoom ("fit" or a factor; 1 = one image pixel per CSS pixel) and window/level.
  // Window/level acts on the displayed 8-bit grey: grey g is shown as (g - (L - W/2)) * 256 / W,
  // clipped to 0..255, so W 256 L 128 (the default) shows the image unchanged.
  var DEFAULT_W = 256, DEFAULT_L = 128, ZOOMS = [0.25, 0.5, 1, 1.5, 2, 3, 4, 6, 8], KEY = "synthmed-reader-view";
  var view = {zoom: "fit", width: DEFAULT_W, level: DEFAULT_L};
  try {
    var saved = JSON.parse(window.sessionStorage.getItem(KEY) || "null");
    if (saved && (saved.zoom === "fit" || (typeof saved.zoom === "number" && saved.zoom > 0))) { view.zoom = saved.zoom; }
    if (saved && typeof saved.width === "number") { view.width = saved.width; }
    if (saved && typeof saved.level === "number") { view.level = saved.level; }
  } catch (err) { /* no storage: defaults */ }
  var lut = null;

  var planes = figures.map(function (fig, i) {
    var spec = layouts[i];
    var canvas = fig.querySelector("canvas");
    return {fig: fig, spec: spec, canvas: canvas, wrap: fig.querySelector(".canvas-wrap"),
            ctx: canvas.getContext("2d", {willReadFrequently: true}), img: fig.querySelector("img"),
            slider: fig.querySelector("input.slice-range"), label: fig.querySelector(".slice"),
            index: Math.floor((spec.n_slices - 1) / 2)};
  });
  // CSS pixels per layout pixel at zoom 1, where the finest image axis gets one CSS pixel per image pixel
  var unit = Math.max.apply(null, planes.map(function (p) {
    return Math.max(p.spec.cols / p.spec.width_px, p.spec.rows / p.spec.height_px);
  }));

  function clamp(x, lo, hi) { return Math.max(lo, Math.min(hi, x)); }
  function save() {
    try { window.sessionStorage.setItem(KEY, JSON.stringify(view)); } catch (err) { /* ignore */ }
  }
  function fitFactor() {
    // the largest zoom at which all planes fit side by side in the viewer and in the window's height
    var gap = parseFloat(window.getComputedStyle(viewer).columnGap) || 0;
    var chrome = 0, widths = 0, tallest = 0;
    planes.forEach(function (p) {
      var cs = window.getComputedStyle(p.fig);
      chrome += parseFloat(cs.paddingLeft) + parseFloat(cs.paddingRight) + parseFloat(cs.borderLeftWidth) +
        parseFloat(cs.borderRightWidth) + p.wrap.parentNode.getBoundingClientRect().width -
        p.wrap.getBoundingClientRect().width;  // the edge labels beside the image
      widths += p.spec.width_px;
      tallest = Math.max(tallest, p.spec.height_px);
    });
    var avail = viewer.clientWidth - chrome - gap * (planes.length - 1) - 4;
    var availH = Math.max(160, window.innerHeight - 330);
    return Math.max(ZOOMS[0], Math.min(avail / widths, availH / tallest) / unit);
  }
  function currentZoom() { return view.zoom === "fit" ? fitFactor() : view.zoom; }
  function layout() {
    var z = currentZoom(), m = z * unit;  // CSS pixels per layout pixel
    planes.forEach(function (p) {
      p.canvas.style.width = Math.max(1, Math.round(p.spec.width_px * m)) + "px";
      p.canvas.style.height = Math.max(1, Math.round(p.spec.height_px * m)) + "px";
    });
    zoomOut.textContent = (view.zoom === "fit" ? "fit, " : "") + (Math.round(z * 100) / 100) + "\u00d7";
    zoomButtons.forEach(function (b) { b.classList.toggle("on", b.getAttribute("data-zoom") === String(view.zoom)); });
    viewer.setAttribute("data-zoom", String(Math.round(z * 1000) / 1000));
  }
  function setZoom(z) {
    view.zoom = z === "fit" ? "fit" : clamp(z, ZOOMS[0], ZOOMS[ZOOMS.length - 1]);
    save();
    // fit first at the smallest size, so that the measured chrome does not include scrollbars
    if (view.zoom === "fit") { planes.forEach(function (p) { p.canvas.style.width = "1px"; }); }
    layout();
  }
  function stepZoom(dir) {
    var z = currentZoom(), next = null;
    ZOOMS.forEach(function (s) {
      if (dir > 0 && s > z * 1.001 && next === null) { next = s; }
      if (dir < 0 && s < z / 1.001) { next = s; }
    });
    if (next !== null) { setZoom(next); }
  }
  function setWindow(w, l) {
    view.width = clamp(Math.round(w), 1, 512);
    view.level = clamp(Math.round(l), 0, 255);
    save();
    if (view.width === DEFAULT_W && view.level === DEFAULT_L) { lut = null; }
    else {
      lut = new Uint8ClampedArray(256);
      var low = view.level - view.width / 2;
      for (var g = 0; g < 256; g++) { lut[g] = Math.round((g - low) * 256 / view.width); }
    }
    widthInput.value = String(view.width);
    levelInput.value = String(view.level);
    wlOut.textContent = "W " + view.width + " L " + view.level;
    viewer.setAttribute("data-window", view.width + " " + view.level);
    planes.forEach(draw);
  }
  function reset() { setZoom("fit"); setWindow(DEFAULT_W, DEFAULT_L); }

  function draw(p) {
    if (!p.img.complete || !p.img.naturalWidth) { return; }
    var s = p.spec, col = p.index % s.grid_cols, row = Math.floor(p.index / s.grid_cols);
    p.ctx.imageSmoothingEnabled = false;
    p.ctx.clearRect(0, 0, s.cols, s.rows);
    p.ctx.drawImage(p.img, col * s.cols, row * s.rows, s.cols, s.rows, 0, 0, s.cols, s.rows);
    if (lut) {
      var d = p.ctx.getImageData(0, 0, s.cols, s.rows), a = d.data;
      for (var k = 0; k < a.length; k += 4) { var g = lut[a[k]]; a[k] = g; a[k + 1] = g; a[k + 2] = g; }
      p.ctx.putImageData(d, 0, 0);
    }
    if (p.slider) { p.slider.value = String(p.index); }
    if (p.label) { p.label.textContent = "slice " + (p.index + 1) + " / " + s.n_slices; }
    p.canvas.setAttribute("data-slice", String(p.index));
  }
  function setSlice(p, k) { p.index = Math.max(0, Math.min(p.spec.n_slices - 1, k)); draw(p); }
  function select(i) {
    active = (i + planes.length) % planes.length;
    planes.forEach(function (p, j) { p.fig.classList.toggle("active", j === active); });
  }
  function ready() {
    buttons.forEach(function (b) { b.disabled = false; });
    shownAt = performance.now();
    document.body.classList.add("ready");
  }
  function failed() {
    var msg = document.createElement("p");
    msg.className = "error";
    msg.textContent = "The image could not be loaded. Reload the page to try again.";
    viewer.appendChild(msg);
  }

  // dragging on an image: window (left/right) and level (up/down); with Shift: pan a zoomed image
  var drag = null;
  function onMove(e) {
    if (!drag) { return; }
    var dx = e.clientX - drag.x, dy = e.clientY - drag.y;
    if (!drag.moved && Math.abs(dx) + Math.abs(dy) < 4) { return; }  // a click selects, it does not drag
    drag.moved = true;
    e.preventDefault();
    if (drag.pan) {
      drag.p.wrap.scrollLeft = drag.left - dx;
      drag.p.wrap.scrollTop = drag.top - dy;
    } else {
      setWindow(drag.width + dx, drag.level + dy);
    }
  }
  function onUp() {
    drag = null;
    document.removeEventListener("mousemove", onMove);
    document.removeEventListener("mouseup", onUp);
  }

  planes.forEach(function (p, i) {
    var onload = function () { draw(p); loaded += 1; if (loaded === planes.length) { ready(); } };
    if (p.img.complete && p.img.naturalWidth) { onload(); }
    else { p.img.addEventListener("load", onload); p.img.addEventListener("error", failed); }
    p.fig.addEventListener("mousedown", function () { select(i); });
    p.canvas.addEventListener("mousedown", function (e) {
      if (e.button !== 0) { return; }
      e.preventDefault();
      drag = {p: p, x: e.clientX, y: e.clientY, width: view.width, level: view.level, pan: e.shiftKey,
              left: p.wrap.scrollLeft, top: p.wrap.scrollTop, moved: false};
      document.addEventListener("mousemove", onMove);
      document.addEventListener("mouseup", onUp);
    });
    p.canvas.addEventListener("wheel", function (e) {
      e.preventDefault(); select(i); setSlice(p, p.index + (e.deltaY < 0 ? 1 : -1));
    }, {passive: false});
    if (p.slider) {
      p.slider.addEventListener("input", function () { select(i); setSlice(p, Number(p.slider.value)); });
    }
  });
  zoomButtons.forEach(function (b) {
    b.addEventListener("click", function () {
      var z = b.getAttribute("data-zoom");
      setZoom(z === "fit" ? "fit" : Number(z));
    });
  });
  widthInput.addEventListener("input", function () { setWindow(Number(widthInput.value), view.level); });
  levelInput.addEventListener("input", function () { setWindow(view.width, Number(levelInput.value)); });
  resetButton.addEventListener("click", reset);
  window.addEventListener("resize", function () { if (view.zoom === "fit") { layout(); } });
  setZoom(view.zoom);
  setWindow(view.width, view.level);

  form.addEventListener("submit", function (e) {
    if (submitting || shownAt === null) { e.preventDefault(); return; }
    submitting = true;
    form.elements.elapsed_ms.value = String(Math.round(performance.now() - shownAt));
    window.setTimeout(function () { buttons.forEach(function (b) { b.disabled = true; }); }, 0);
  });
  function answer(value) {
    var b = buttons.filter(function (x) { return x.value === value; })[0];
    if (b && !b.disabled && !submitting) {
      if (form.requestSubmit) { form.requestSubmit(b); } else { b.click(); }
    }
  }
  document.addEventListener("keydown", function (e) {
    if (e.altKey || e.ctrlKey || e.metaKey) { return; }
    var k = e.key, lower = k.length === 1 ? k.toLowerCase() : k, p = planes[active];
    if (lower === "r") { answer("real"); }
    else if (lower === "s") { answer("synthetic"); }
    else if (/^[1-5]$/.test(k)) {
      var radio = form.querySelector("input[name=confidence][value='" + k + "']");
      if (radio) { radio.checked = true; }
    }
    else if (k === "ArrowUp") { setSlice(p, p.index + 1); }
    else if (k === "ArrowDown") { setSlice(p, p.index - 1); }
    else if (k === "PageUp") { setSlice(p, p.index + 5); }
    else if (k === "PageDown") { setSlice(p, p.index - 5); }
    else if (k === "ArrowRight") { select(active + 1); }
    else if (k === "ArrowLeft") { select(active - 1); }
    else if (k === "+" || k === "=") { stepZoom(1); }
    else if (k === "-" || k === "_") { stepZoom(-1); }
    else if (lower === "f") { setZoom("fit"); }
    else if (k === "0") { reset(); }
    else if (lower === "c") { setWindow(Math.min(view.width - 1, view.width / 1.25), view.level); }
    else if (lower === "x") { setWindow(Math.max(view.width + 1, view.width * 1.25), view.level); }
    else if (lower === "b") { setWindow(view.width, view.level - 8); }
    else if (lower === "d") { setWindow(view.width, view.level + 8); }
    else { return; }
    e.preventDefault();
  });
})();
"""

#: confidence levels and their labels (1 = guessing .. 5 = certain)
CONFIDENCE_LABELS = ((1, "guess"), (2, "unsure"), (3, "fairly sure"), (4, "sure"), (5, "certain"))
