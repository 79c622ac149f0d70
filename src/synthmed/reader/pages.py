"""HTML templates (Jinja, autoescaped), the stylesheet and the script of the reader web app.

They live in Python strings so the package needs no data files.  The script is served from
``/assets/reader.js`` (the Content-Security-Policy allows no inline script); the page hands it
the plane layout through a ``data-layout`` attribute.
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
  <div class="viewer" id="viewer" data-layout="{{ layouts | tojson | forceescape }}">
  {% for lay in layouts %}
    <figure class="plane{% if loop.first %} active{% endif %}" data-plane="{{ lay.name }}">
      <canvas width="{{ lay.cols }}" height="{{ lay.rows }}"></canvas>
      <img class="mosaic" src="{{ image_urls[loop.index0] }}" alt="" hidden>
      <figcaption>
        {% if lay.name != "image" %}<span class="plane-name">{{ lay.name | capitalize }}</span>
        <span class="slice">slice {{ (lay.n_slices - 1) // 2 + 1 }} / {{ lay.n_slices }}</span>{% endif %}
      </figcaption>
      {% if lay.n_slices > 1 %}
      <input type="range" min="0" max="{{ lay.n_slices - 1 }}" value="{{ (lay.n_slices - 1) // 2 }}"
             aria-label="{{ lay.name }} slice">
      {% endif %}
    </figure>
  {% endfor %}
  </div>
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
.plane canvas{image-rendering:pixelated;background:#000;display:block;cursor:ns-resize}
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
  var active = 0, loaded = 0, submitting = false, shownAt = null;
  buttons.forEach(function (b) { b.disabled = true; });

  var planes = figures.map(function (fig, i) {
    var spec = layouts[i];
    var canvas = fig.querySelector("canvas");
    canvas.style.width = spec.width_px + "px";  // display size in physical proportions
    canvas.style.height = spec.height_px + "px";
    return {fig: fig, spec: spec, canvas: canvas, ctx: canvas.getContext("2d"), img: fig.querySelector("img"),
            slider: fig.querySelector("input[type=range]"), label: fig.querySelector(".slice"),
            index: Math.floor((spec.n_slices - 1) / 2)};
  });

  function draw(p) {
    if (!p.img.complete || !p.img.naturalWidth) { return; }
    var s = p.spec, col = p.index % s.grid_cols, row = Math.floor(p.index / s.grid_cols);
    p.ctx.imageSmoothingEnabled = false;
    p.ctx.clearRect(0, 0, s.cols, s.rows);
    p.ctx.drawImage(p.img, col * s.cols, row * s.rows, s.cols, s.rows, 0, 0, s.cols, s.rows);
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

  planes.forEach(function (p, i) {
    var onload = function () { draw(p); loaded += 1; if (loaded === planes.length) { ready(); } };
    if (p.img.complete && p.img.naturalWidth) { onload(); }
    else { p.img.addEventListener("load", onload); p.img.addEventListener("error", failed); }
    p.fig.addEventListener("mousedown", function () { select(i); });
    p.canvas.addEventListener("wheel", function (e) {
      e.preventDefault(); select(i); setSlice(p, p.index + (e.deltaY < 0 ? 1 : -1));
    }, {passive: false});
    if (p.slider) {
      p.slider.addEventListener("input", function () { select(i); setSlice(p, Number(p.slider.value)); });
    }
  });

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
    var k = e.key, p = planes[active];
    if (k === "r" || k === "R") { answer("real"); }
    else if (k === "s" || k === "S") { answer("synthetic"); }
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
    else { return; }
    e.preventDefault();
  });
})();
"""

#: confidence levels and their labels (1 = guessing .. 5 = certain)
CONFIDENCE_LABELS = ((1, "guess"), (2, "unsure"), (3, "fairly sure"), (4, "sure"), (5, "certain"))
