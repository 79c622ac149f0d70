"""The reader-study web app (Flask) and its server.

Routes (``TOKEN``: a reader's secret token, ``ADMIN``: the admin token)::

    GET  /r/TOKEN                         the reader's next image (or the thank-you page)
    POST /r/TOKEN/answer                  item, position, answer, [confidence], [elapsed_ms]
    GET  /r/TOKEN/img/ITEM/PLANE.png      one plane's slice mosaic of one study image (cacheable)
    GET  /admin/ADMIN                     every reader's progress and personal link
    GET  /admin/ADMIN/answers.csv         all answers (no ground truth)
    GET  /assets/reader.css, reader.js    the stylesheet and script

A bad or missing token is answered 403, an unknown item or plane 404, a malformed POST 400,
and a database failure 503 (the page does not advance).  Answers cannot be changed: a second,
different answer to an image already answered (an old tab) gets 409 and a page that names the
answer that was kept; the same answer and confidence again (a retried request) gets the 303 of
a saved one, since nothing the reader believes is lost.  An answer to an image that is not yet
the reader's current one also gets 409.  An answer is committed before the 303 redirect that
shows the next image, so the reader never sees an image advance past an unsaved answer.
Reading times are taken from the server's clock: :meth:`AnswerStore.mark_shown` notes when the
page showing an image is first sent.

:func:`serve` runs Werkzeug's threaded server with a socket timeout on every connection (idle
or slow clients are dropped) and at most ``max_threads`` handler threads; further connections
wait in the listen queue until a thread is free.
Nothing is served from the file system by name, so there is no path to traverse, and the
ground truth (``truth.csv``) is never read by the app.  Images come from the study's PNG cache
(:mod:`synthmed.reader.pngcache`, built at start-up when missing): rendered once, compressed, and
every one padded to the same byte length, so no response size tells one source from the other.
They may be kept in the reader's browser cache (:data:`IMAGE_CACHE_CONTROL`); every page and
every other response is ``no-store``.
"""

from __future__ import annotations

import csv
import io
import logging
import socket
import sqlite3
import sys
import threading
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from flask import Flask, Response, abort, redirect, render_template, request
from jinja2 import DictLoader
from werkzeug.exceptions import Conflict, HTTPException
from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler

from synthmed.errors import SynthmedError
from synthmed.reader import pages
from synthmed.reader.pngcache import ensure_png_cache
from synthmed.reader.render import CONVENTION_TEXT, PLANE_EDGES
from synthmed.reader.store import DUPLICATE, EXPORT_COLUMNS, SAVED, STALE, AnswerStore
from synthmed.reader.study import CONFIDENCE_LEVELS, ITEM_ID_RE, Study, load_study

log = logging.getLogger(__name__)

ANSWER_FIELDS = {"item", "position", "answer", "confidence", "elapsed_ms"}
MAX_ELAPSED_MS = 86_400_000
#: seconds a connection may stay silent (idle keep-alive, a stalled request) before it is closed
REQUEST_TIMEOUT_S = 15.0
#: most request-handling threads at once; more connections wait in the listen queue
MAX_HANDLER_THREADS = 100
#: images never change under their URL (random item id, secret reader token): the reader's own
#: browser may keep them for a day, shared caches never
IMAGE_CACHE_CONTROL = "private, max-age=86400, immutable"
CSP = ("default-src 'none'; img-src 'self'; script-src 'self'; style-src 'self'; form-action 'self'; "
       "base-uri 'none'; frame-ancestors 'none'")
_MESSAGES = {
    400: "The request was malformed.", 403: "This link is not valid. Please use the personal link you were given.",
    404: "Not found.", 405: "Method not allowed.",
    409: ("This is not the image you are on now (perhaps an older window or tab), so this answer was not saved. "
          "Continue to see your current image."),
    413: "The request is too large.", 415: "Unsupported request format.",
    503: "Your answer could not be saved. Please go back and answer again.",
}


class StaleAnswer(Conflict):
    """409: the answered image is not the reader's current one (e.g. a second, older tab)."""

    def __init__(self, link: str, message: str | None = None) -> None:
        super().__init__()
        self.link = link
        self.message = message


def _already_answered(link: str, kept: dict[str, Any] | None) -> StaleAnswer:
    """409 for a second, different answer to an answered image: the page names the kept answer."""
    if kept is None:  # cannot happen (answers are never deleted); say nothing wrong
        return StaleAnswer(link, "This image was already answered; answers cannot be changed.")
    labels = dict(pages.CONFIDENCE_LABELS)
    conf = kept.get("confidence")
    conf_text = f"confidence {conf} ({labels.get(conf, '?')})" if conf is not None else "no confidence given"
    return StaleAnswer(link, "This image was already answered, probably in another window or tab. Answers cannot be "
                             f"changed, so your first answer was kept: {str(kept['answer']).capitalize()}, "
                             f"{conf_text}.")


def create_app(study_dir: str | Path) -> Flask:
    """The Flask app serving one study folder.

    Args:
        study_dir: a folder written by :func:`synthmed.reader.study.create_study`.

    Returns:
        The app; ``app.extensions["synthmed_reader"]`` holds the loaded study and answer store.
    """
    study = load_study(study_dir)
    png = ensure_png_cache(study.root, study.images, study.items, study.layouts)
    store = AnswerStore(study.db_path)
    app = Flask(__name__, static_folder=None)
    app.jinja_loader = DictLoader({"base.html": pages.BASE, "read.html": pages.READ, "done.html": pages.DONE,
                                   "message.html": pages.MESSAGE, "admin.html": pages.ADMIN})
    app.config.update(MAX_CONTENT_LENGTH=4096, MAX_FORM_MEMORY_SIZE=4096, MAX_FORM_PARTS=16)
    app.extensions["synthmed_reader"] = {"study": study, "store": store, "png": png}
    rows = {item: i for i, item in enumerate(study.items)}

    def reader_of(token: str) -> str:
        name = study.reader_tokens.get(token)
        if name is None:
            abort(403)
        return name

    def admin_check(token: str) -> None:
        if token != study.admin_token:
            abort(403)

    @app.after_request
    def _headers(resp: Response) -> Response:
        resp.headers["Content-Security-Policy"] = CSP
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "no-referrer"
        resp.headers["X-Frame-Options"] = "DENY"
        if resp.status_code != 200 or "Cache-Control" not in resp.headers:  # only images set their own
            resp.headers["Cache-Control"] = "no-store"
        return resp

    @app.errorhandler(HTTPException)
    def _error(e: HTTPException) -> Any:
        if e.code in (301, 302, 303, 307, 308):
            return e
        code = e.code or 500
        message = getattr(e, "message", None) or _MESSAGES.get(code, "Something went wrong.")
        if code == 400 and e.description and e.description != type(e).description:
            message = f"{message} ({e.description})"
        body = render_template("message.html", title="Reader study", body_class="", heading=f"Error {code}",
                               message=message, link=getattr(e, "link", None))
        return Response(body, status=code, mimetype="text/html")

    @app.get("/")
    @app.get("/r/")
    @app.get("/admin/")
    def _no_token() -> Any:
        abort(403)

    @app.get("/r/<token>")
    def read(token: str) -> Any:
        reader = reader_of(token)
        done = store.count(reader)
        total = study.n_items
        if done >= total:
            return render_template("done.html", title="Reader study: done", body_class="done", total=total)
        item = study.orders[reader][done]
        try:
            store.mark_shown(reader, done, item)
        except sqlite3.Error:  # the reading time of this image falls back to the previous answer's time
            log.exception("could not note that %s was shown image %d", reader, done)
        urls = [f"/r/{token}/img/{item}/{lay.name}.png" for lay in study.layouts]
        edges = [PLANE_EDGES.get(lay.name) for lay in study.layouts]
        return render_template("read.html", title="Reader study", body_class="read", total=total, position=done,
                               item=item, layouts=[lay.to_dict() for lay in study.layouts], image_urls=urls,
                               edges=edges, convention=CONVENTION_TEXT if study.spatial_dims == 3 else None,
                               answer_url=f"/r/{token}/answer", confidence_levels=pages.CONFIDENCE_LABELS)

    @app.post("/r/<token>/answer")
    def answer(token: str) -> Any:
        reader = reader_of(token)
        _check_same_origin()
        fields = _parse_answer()
        if not study.has_item(fields["item"]):
            abort(404)
        try:
            outcome = store.record(reader, order=study.orders[reader], **fields)
        except sqlite3.Error:
            log.exception("could not store an answer of %s", reader)
            abort(503)
        if outcome == STALE:
            raise StaleAnswer(f"/r/{token}")
        if outcome == DUPLICATE:
            try:
                kept = store.answer_of(reader, fields["item"])
            except sqlite3.Error:
                log.exception("could not read an answer of %s", reader)
                abort(503)
            same = kept is not None and (kept["answer"], kept["confidence"]) == (fields["answer"], fields["confidence"])
            if not same:  # a different answer from an old tab: refuse it and say which answer stands
                log.info("%s: second answer to %s refused (kept %s)", reader, fields["item"],
                         kept["answer"] if kept else None)
                raise _already_answered(f"/r/{token}", kept)
        log.debug("%s: %s position %d (%s)", reader, fields["item"], fields["position"],
                  "saved" if outcome == SAVED else "the same answer again")
        return redirect(f"/r/{token}", code=303)

    @app.get("/r/<token>/img/<item>/<plane>.png")
    def image(token: str, item: str, plane: str) -> Any:
        reader_of(token)
        if not ITEM_ID_RE.match(item) or not study.has_item(item):
            abort(404)
        try:
            data = png.get(rows[item], plane)
        except KeyError:
            abort(404)
        return Response(data, mimetype="image/png", headers={"Cache-Control": IMAGE_CACHE_CONTROL})

    @app.get("/admin/<token>")
    def admin(token: str) -> Any:
        admin_check(token)
        prog = store.progress()
        rows = []
        for name in study.readers:
            p = prog.get(name)
            rows.append({"name": name, "answered": p.answered if p else 0, "first": p.first_answer if p else None,
                         "last": p.last_answer if p else None,
                         "link": f"{request.host_url}r/{study.token_of(name)}"})
        return render_template("admin.html", title="Reader study: admin", body_class="admin", rows=rows,
                               total=study.n_items, csv_url=f"/admin/{token}/answers.csv")

    @app.get("/admin/<token>/answers.csv")
    def export_csv(token: str) -> Any:
        admin_check(token)
        try:  # the export and the database file then hold the same answers
            store.checkpoint()
        except sqlite3.Error:
            log.exception("could not checkpoint %s", study.db_path)
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=EXPORT_COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(store.rows())
        return Response(buf.getvalue(), mimetype="text/csv",
                        headers={"Content-Disposition": 'attachment; filename="answers.csv"'})

    @app.get("/favicon.ico")
    def favicon() -> Any:
        return Response(status=204)  # browsers ask for it; answering 204 keeps their consoles clean

    @app.get("/assets/reader.css")
    def css() -> Any:
        return Response(pages.CSS, mimetype="text/css")

    @app.get("/assets/reader.js")
    def js() -> Any:
        return Response(pages.JS, mimetype="text/javascript")

    return app


def _check_same_origin() -> None:
    """Refuse cross-site form posts (defence in depth; the token is the real credential)."""
    origin = request.headers.get("Origin")
    # compare host:port only, so a TLS-terminating reverse proxy (https outside, http here) still works
    if origin is not None and origin != "null" and urlsplit(origin).netloc != request.host:
        abort(403)
    if request.headers.get("Sec-Fetch-Site") == "cross-site":
        abort(403)


def _int_field(value: str | None, name: str, low: int, high: int, required: bool) -> int | None:
    if value is None or value == "":
        if required:
            abort(400, f"field {name!r} is required")
        return None
    if not value.isascii() or not value.isdigit() or len(value) > 12 or not low <= int(value) <= high:
        abort(400, f"field {name!r} must be an integer in [{low}, {high}]")
    return int(value)


def _parse_answer() -> dict[str, Any]:
    """Validate the answer form: known fields only, each once, every value checked."""
    if request.mimetype not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        abort(415)
    form = request.form
    if request.files or set(form.keys()) - ANSWER_FIELDS or any(len(form.getlist(k)) > 1 for k in form.keys()):
        abort(400)
    item = form.get("item", "")
    if not ITEM_ID_RE.match(item):
        abort(400)
    ans = form.get("answer", "")
    if ans not in ("real", "synthetic"):
        abort(400)
    position = _int_field(form.get("position"), "position", 0, 10_000_000, True)
    conf = _int_field(form.get("confidence"), "confidence", min(CONFIDENCE_LEVELS), max(CONFIDENCE_LEVELS), False)
    elapsed = _int_field(form.get("elapsed_ms"), "elapsed_ms", 0, MAX_ELAPSED_MS, False)
    return {"item": item, "position": position, "answer": ans, "confidence": conf, "elapsed_ms": elapsed}


def study_links(study: Study, base_url: str) -> dict[str, Any]:
    """The personal reader links and the admin link of a study served at ``base_url``."""
    base = base_url.rstrip("/")
    return {"readers": {name: f"{base}/r/{study.token_of(name)}" for name in study.readers},
            "admin": f"{base}/admin/{study.admin_token}"}


def _display_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        return socket.gethostname()
    return f"[{host}]" if ":" in host else host


class _RequestHandler(WSGIRequestHandler):
    """Werkzeug's handler with a socket timeout (set per server by :func:`make_reader_server`)."""

    def log_error(self, format: str, *args: Any) -> None:
        if format.startswith("Request timed out"):  # an idle keep-alive connection: routine, not an error
            self.log("info", format, *args)
        else:
            super().log_error(format, *args)


class _BoundedThreadedServer(ThreadedWSGIServer):
    """A thread per connection, but at most ``max_threads`` at once: beyond that, the accept loop
    waits for a free thread and new connections queue in the kernel's listen backlog."""

    def __init__(self, *args: Any, max_threads: int, **kwargs: Any) -> None:
        self._slots = threading.BoundedSemaphore(max_threads)
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        self._slots.acquire()
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


def make_reader_server(app: Flask, host: str = "127.0.0.1", port: int = 8765, *,
                       timeout: float = REQUEST_TIMEOUT_S, max_threads: int = MAX_HANDLER_THREADS) -> ThreadedWSGIServer:
    """The threaded WSGI server :func:`serve` runs: a socket timeout on every connection and a cap
    on concurrent handler threads.

    Args:
        app: the app of :func:`create_app`.
        host: interface to listen on.
        port: TCP port (0 picks a free one).
        timeout: seconds a connection may stay silent before it is closed.
        max_threads: most connections handled at once.

    Raises:
        SynthmedError: when the address cannot be bound or the limits are not positive.
    """
    if not timeout > 0 or max_threads < 1:
        raise SynthmedError(f"need timeout > 0 and max_threads >= 1, got {timeout} and {max_threads}")
    handler = type("ReaderRequestHandler", (_RequestHandler,), {"timeout": float(timeout)})
    try:
        return _BoundedThreadedServer(host, port, app, handler, max_threads=max_threads)
    except (OSError, SystemExit) as e:
        raise SynthmedError(f"cannot listen on {host}:{port} ({e})") from None


def serve(study_dir: str | Path, host: str = "127.0.0.1", port: int = 8765, out: TextIO | None = None, *,
          timeout: float = REQUEST_TIMEOUT_S, max_threads: int = MAX_HANDLER_THREADS) -> None:
    """Serve a study until interrupted (Ctrl-C), printing every reader's link and the admin link.

    Args:
        study_dir: the study folder.
        host: interface to listen on (127.0.0.1: this machine only; 0.0.0.0: the network).
        port: TCP port (0 picks a free one).
        out: where the links are printed (default stdout).
        timeout: seconds a connection may stay silent before it is closed.
        max_threads: most connections handled at once (see :func:`make_reader_server`).
    """
    out = out or sys.stdout
    app = create_app(study_dir)
    study: Study = app.extensions["synthmed_reader"]["study"]
    server = make_reader_server(app, host, port, timeout=timeout, max_threads=max_threads)
    links = study_links(study, f"http://{_display_host(host)}:{server.server_port}")
    print(f"serving reader study {Path(study_dir)} ({study.n_items} images per reader); Ctrl-C stops", file=out)
    for name, url in links["readers"].items():
        print(f"  {name}: {url}", file=out)
    print(f"  admin: {links['admin']}", file=out)
    out.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
