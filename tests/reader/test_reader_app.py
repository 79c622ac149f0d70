"""The reader web app through Flask's test client: access, validation, blinding, resume, durability."""

from __future__ import annotations

import contextlib
import io
import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from reader_helpers import make_study

from synthmed.reader.app import create_app
from synthmed.reader.render import encode_png, mosaic
from synthmed.reader.study import Study, load_truth


def _page_state(html: str) -> tuple[str, int]:
    item = re.search(r'name="item" value="([^"]+)"', html)
    pos = re.search(r'name="position" value="(\d+)"', html)
    assert item and pos, html[:500]
    return item.group(1), int(pos.group(1))


def _rows(root: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(root / "answers.sqlite") as con:
        return con.execute("SELECT reader, position, item, answer, confidence FROM answers "
                           "ORDER BY reader, position").fetchall()


@pytest.fixture
def served(tmp_path: Path) -> tuple[Path, Any, Study]:
    root = make_study(tmp_path, 3, n_real=3, n_synthetic=3, readers=2, size=12)
    app = create_app(root)
    return root, app, app.extensions["synthmed_reader"]["study"]


def test_bad_or_missing_tokens_get_403(served: tuple[Path, Any, Study]) -> None:
    root, app, study = served
    c = app.test_client()
    item = study.items[0]
    bad = "A" * 32
    for url in ["/", "/r/", "/admin/", f"/r/{bad}", "/r/short", f"/r/{bad}/img/{item}/axial.png",
                f"/admin/{bad}", f"/admin/{bad}/answers.csv", f"/admin/{study.token_of('reader-1')}",
                f"/r/{study.admin_token}"]:
        r = c.get(url)
        assert r.status_code == 403, url
        assert item not in r.get_data(as_text=True)
    r = c.post(f"/r/{bad}/answer", data={"item": item, "position": "0", "answer": "real"})
    assert r.status_code == 403
    assert _rows(root) == []


def test_unknown_ids_and_planes_get_404(served: tuple[Path, Any, Study]) -> None:
    root, app, study = served
    c = app.test_client()
    tok = study.token_of("reader-1")
    item = study.items[0]
    for url in [f"/r/{tok}/img/{'B' * 16}/axial.png", f"/r/{tok}/img/{item}/image.png",
                f"/r/{tok}/img/{item}/axial.jpg", f"/r/{tok}/img/short/axial.png", f"/r/{tok}/other",
                "/static/reader.js", "/assets/other.js"]:
        assert c.get(url).status_code == 404, url
    r = c.post(f"/r/{tok}/answer", data={"item": "C" * 16, "position": "0", "answer": "real"})
    assert r.status_code == 404
    assert _rows(root) == []


def test_no_path_traversal(served: tuple[Path, Any, Study]) -> None:
    root, app, study = served
    c = app.test_client()
    tok = study.token_of("reader-1")
    secrets_on_disk = [(root / "truth.csv").read_text(encoding="utf-8").splitlines()[1], study.admin_token]
    urls = ["/r/../study.json", "/r/..%2fstudy.json", "/r/%2e%2e/truth.csv", f"/r/{tok}/../../truth.csv",
            f"/r/{tok}/img/..%2f..%2ftruth.csv/axial.png", f"/r/{tok}/img/{study.items[0]}/..%2faxial.png",
            "/assets/..%2f..%2fstudy.json", "/..%2f..%2fetc/passwd", "//etc/passwd", "/answers.sqlite",
            "/truth.csv", "/access.json", f"/r/{tok}/img/%2e%2e/%2e%2e.png"]
    for url in urls:
        r = c.get(url)
        assert r.status_code in (403, 404), url
        body = r.get_data(as_text=True)
        assert not any(s in body for s in secrets_on_disk), url


@pytest.mark.parametrize("form", [
    {"position": "0", "answer": "real"},                                       # no item
    {"item": "ITEM", "position": "0"},                                         # no answer
    {"item": "ITEM", "position": "0", "answer": "maybe"},
    {"item": "ITEM", "answer": "real"},                                        # no position
    {"item": "ITEM", "position": "-1", "answer": "real"},
    {"item": "ITEM", "position": "1e3", "answer": "real"},
    {"item": "ITEM", "position": "\u0661", "answer": "real"},                  # non-ASCII digit
    {"item": "ITEM", "position": "0", "answer": "real", "confidence": "6"},
    {"item": "ITEM", "position": "0", "answer": "real", "confidence": "0"},
    {"item": "ITEM", "position": "0", "answer": "real", "confidence": "high"},
    {"item": "ITEM", "position": "0", "answer": "real", "elapsed_ms": "-4"},
    {"item": "ITEM", "position": "0", "answer": "real", "elapsed_ms": "999999999999"},
    {"item": "ITEM", "position": "0", "answer": "real", "source": "real"},    # unknown field
    {"item": "ITEM", "position": ["0", "0"], "answer": "real"},               # repeated field
    {"item": "../../truth.csv", "position": "0", "answer": "real"},
])
def test_invalid_posts_get_400_and_store_nothing(served: tuple[Path, Any, Study], form: dict) -> None:
    root, app, study = served
    tok = study.token_of("reader-1")
    item = study.orders["reader-1"][0]
    data = {k: ([item if x == "ITEM" else x for x in v] if isinstance(v, list) else (item if v == "ITEM" else v))
            for k, v in form.items()}
    r = app.test_client().post(f"/r/{tok}/answer", data=data)
    assert r.status_code == 400
    assert _rows(root) == []


def test_non_form_posts_and_cross_site_posts_are_refused(served: tuple[Path, Any, Study]) -> None:
    root, app, study = served
    c = app.test_client()
    tok = study.token_of("reader-1")
    item = study.orders["reader-1"][0]
    assert c.post(f"/r/{tok}/answer", json={"item": item, "position": 0, "answer": "real"}).status_code == 415
    r = c.post(f"/r/{tok}/answer", data={"item": item, "position": "0", "answer": "real"},
               headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    assert c.post(f"/r/{tok}/answer", data="x" * 10000,
                  content_type="application/x-www-form-urlencoded").status_code == 413
    assert c.get(f"/r/{tok}/answer").status_code == 405
    assert _rows(root) == []
    # the same origin, also as seen through a TLS-terminating proxy, is accepted
    r = c.post(f"/r/{tok}/answer", data={"item": item, "position": "0", "answer": "real"},
               headers={"Origin": "https://localhost", "Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 303 and len(_rows(root)) == 1


def test_answer_flow_resume_and_done(served: tuple[Path, Any, Study]) -> None:
    root, app, study = served
    tok = study.token_of("reader-2")
    order = study.orders["reader-2"]
    c = app.test_client()
    for k in range(2):
        page = c.get(f"/r/{tok}").get_data(as_text=True)
        assert f"Image {k + 1} of 6" in page
        item, pos = _page_state(page)
        assert (item, pos) == (order[k], k)
        r = c.post(f"/r/{tok}/answer", data={"item": item, "position": str(pos), "answer": "synthetic",
                                             "confidence": "4", "elapsed_ms": "1234"})
        assert r.status_code == 303 and r.headers["Location"].endswith(f"/r/{tok}")
    # the browser is closed and the server restarted: a new app and a new client resume at image 3
    app2 = create_app(root)
    page = app2.test_client().get(f"/r/{tok}").get_data(as_text=True)
    assert "Image 3 of 6" in page and _page_state(page) == (order[2], 2)
    # reader-1 is unaffected
    assert "Image 1 of 6" in app2.test_client().get(f"/r/{study.token_of('reader-1')}").get_data(as_text=True)
    c2 = app2.test_client()
    for k in range(2, 6):
        c2.post(f"/r/{tok}/answer", data={"item": order[k], "position": str(k), "answer": "real"})
    page = c2.get(f"/r/{tok}").get_data(as_text=True)
    assert 'id="done"' in page and "All 6 images are answered" in page
    assert [r[1] for r in _rows(root)] == list(range(6))
    assert _rows(root)[0] == ("reader-2", 0, order[0], "synthetic", 4)


def test_double_submit_and_stale_tabs_change_nothing(served: tuple[Path, Any, Study]) -> None:
    root, app, study = served
    tok = study.token_of("reader-1")
    order = study.orders["reader-1"]
    c = app.test_client()
    c.post(f"/r/{tok}/answer", data={"item": order[0], "position": "0", "answer": "real"})
    # the same answer posted again (a retried request): accepted, not duplicated
    r = c.post(f"/r/{tok}/answer", data={"item": order[0], "position": "0", "answer": "real"})
    assert r.status_code == 303
    # a different answer to the answered image: refused, the first one is kept
    r = c.post(f"/r/{tok}/answer", data={"item": order[0], "position": "0", "answer": "synthetic"})
    assert r.status_code == 409
    # an answer for an image that is not the current one (an old tab, a skipped image): 409
    r = c.post(f"/r/{tok}/answer", data={"item": order[3], "position": "3", "answer": "real"})
    assert r.status_code == 409 and f"/r/{tok}" in r.get_data(as_text=True)
    r = c.post(f"/r/{tok}/answer", data={"item": order[2], "position": "1", "answer": "real"})
    assert r.status_code == 409
    assert _rows(root) == [("reader-1", 0, order[0], "real", None)]


def test_a_second_answer_from_an_old_tab_is_refused_and_names_the_kept_answer(
        served: tuple[Path, Any, Study]) -> None:
    root, app, study = served
    tok = study.token_of("reader-1")
    tab_a, tab_b = app.test_client(), app.test_client()
    item, pos = _page_state(tab_a.get(f"/r/{tok}").get_data(as_text=True))
    assert _page_state(tab_b.get(f"/r/{tok}").get_data(as_text=True)) == (item, pos)
    r = tab_a.post(f"/r/{tok}/answer", data={"item": item, "position": str(pos), "answer": "real", "confidence": "4"})
    assert r.status_code == 303
    # the old tab answers the same image at the same position: not silently dropped, but refused and explained
    r = tab_b.post(f"/r/{tok}/answer", data={"item": item, "position": str(pos), "answer": "synthetic"})
    body = r.get_data(as_text=True)
    assert r.status_code == 409
    assert "first answer was kept" in body and "Real" in body and "4 (sure)" in body
    assert "Synthetic" not in body and f'href="/r/{tok}"' in body
    # the same (answer, confidence) again is a retried request: 303, nothing changes
    r = tab_b.post(f"/r/{tok}/answer", data={"item": item, "position": str(pos), "answer": "real", "confidence": "4"})
    assert r.status_code == 303
    # the same answer with another confidence would also be a change: refused
    r = tab_b.post(f"/r/{tok}/answer", data={"item": item, "position": str(pos), "answer": "real", "confidence": "1"})
    assert r.status_code == 409 and "Real" in r.get_data(as_text=True)
    assert _rows(root) == [("reader-1", 0, item, "real", 4)]


def test_answer_is_committed_before_the_next_image_is_shown(served: tuple[Path, Any, Study]) -> None:
    root, app, study = served
    tok = study.token_of("reader-1")
    item = study.orders["reader-1"][0]
    r = app.test_client().post(f"/r/{tok}/answer", data={"item": item, "position": "0", "answer": "real"})
    assert r.status_code == 303
    # an independent connection (another process would see the same) already sees the row
    con = sqlite3.connect(root / "answers.sqlite")
    assert con.execute("SELECT item, answer FROM answers").fetchall() == [(item, "real")]
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()
    store = app.extensions["synthmed_reader"]["store"]
    with store.connect() as c:
        assert c.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_a_failed_write_does_not_advance(served: tuple[Path, Any, Study], monkeypatch: pytest.MonkeyPatch) -> None:
    root, app, study = served
    tok = study.token_of("reader-1")
    item = study.orders["reader-1"][0]
    store = app.extensions["synthmed_reader"]["store"]

    def fail(*args: Any, **kwargs: Any) -> str:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(store, "record", fail)
    c = app.test_client()
    r = c.post(f"/r/{tok}/answer", data={"item": item, "position": "0", "answer": "real"})
    assert r.status_code == 503 and "could not be saved" in r.get_data(as_text=True)
    assert _page_state(c.get(f"/r/{tok}").get_data(as_text=True)) == (item, 0)


def test_pages_and_images_do_not_reveal_the_source(served: tuple[Path, Any, Study]) -> None:
    root, app, study = served
    truth = load_truth(root)
    tok = study.token_of("reader-1")
    c = app.test_client()
    pages: dict[str, set] = {"real": set(), "synthetic": set()}
    image_meta: dict[tuple[str, str], set] = {}
    compressed: dict[str, list[int]] = {"real": [], "synthetic": []}
    for k, item in enumerate(study.orders["reader-1"]):
        r = c.get(f"/r/{tok}")
        headers = tuple(sorted((h, v) for h, v in r.headers.items() if h.lower() != "date"))
        html = (r.get_data(as_text=True).replace(item, "ITEM").replace(f'name="position" value="{k}"', "POS")
                .replace(f"Image {k + 1} of", "Image N of").replace(f'<progress max="6" value="{k}">', "PROGRESS"))
        pages[truth[item]["source"]].add((html, headers))
        for lay in study.layouts:
            img = c.get(f"/r/{tok}/img/{item}/{lay.name}.png")
            assert img.status_code == 200 and img.mimetype == "image/png"
            with Image.open(io.BytesIO(img.data)) as im:  # the padded PNG shows exactly the study's pixels
                np.testing.assert_array_equal(np.asarray(im), mosaic(study.image(item), lay))
            key = (truth[item]["source"], lay.name)
            image_meta.setdefault(key, set()).add(
                tuple(sorted((h, v) for h, v in img.headers.items() if h.lower() != "date")))
            compressed[truth[item]["source"]].append(len(encode_png(mosaic(study.image(item), lay))))
        c.post(f"/r/{tok}/answer", data={"item": item, "position": str(k), "answer": "real"})
    # after removing the item id and the position, every page is the same, real or synthetic
    assert len(pages["real"]) == 1 and pages["real"] == pages["synthetic"]
    # compressed alone, the smooth real blobs and the noisy synthetic images differ in size ...
    assert max(compressed["real"]) < min(compressed["synthetic"])
    # ... but every image response of the study has the same headers, Content-Length included
    assert len(set().union(*image_meta.values())) == 1
    headers = dict(next(iter(image_meta[("real", "axial")])))
    assert int(headers["Content-Length"]) == app.extensions["synthmed_reader"]["png"].record_bytes
    assert headers["Cache-Control"] == "private, max-age=86400, immutable"


def test_png_cache_is_built_when_missing_or_stale(tmp_path: Path) -> None:
    root = make_study(tmp_path, 2, n_real=2, n_synthetic=2, readers=1, size=12)
    first = (root / "images_png.bin").read_bytes()
    assert len(first) == 4 * json.loads((root / "images_png.json").read_text())["record_bytes"]
    for damage in ("missing", "stale", "truncated"):
        if damage == "missing":  # a study written before the cache existed
            (root / "images_png.bin").unlink()
            (root / "images_png.json").unlink()
        elif damage == "stale":  # rendered by another version
            info = json.loads((root / "images_png.json").read_text())
            (root / "images_png.json").write_text(json.dumps({**info, "key": "0" * 64}))
        else:
            (root / "images_png.bin").write_bytes(first[:-1])
        app = create_app(root)
        assert (root / "images_png.bin").read_bytes() == first
        study = app.extensions["synthmed_reader"]["study"]
        r = app.test_client().get(f"/r/{study.token_of('reader-1')}/img/{study.items[0]}/image.png")
        assert r.status_code == 200 and r.data == app.extensions["synthmed_reader"]["png"].get(0, "image")
    assert not [p.name for p in root.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_admin_progress_and_csv_export(served: tuple[Path, Any, Study]) -> None:
    root, app, study = served
    c = app.test_client()
    tok = study.token_of("reader-1")
    order = study.orders["reader-1"]
    for k in range(3):
        c.post(f"/r/{tok}/answer", data={"item": order[k], "position": str(k), "answer": "real", "confidence": "2"})
    page = c.get(f"/admin/{study.admin_token}").get_data(as_text=True)
    assert "3 / 6" in page and "0 / 6" in page and f"/r/{tok}" in page
    r = c.get(f"/admin/{study.admin_token}/answers.csv")
    assert r.status_code == 200 and r.mimetype == "text/csv"
    assert "attachment" in r.headers["Content-Disposition"]
    lines = r.get_data(as_text=True).strip().splitlines()
    assert lines[0] == "reader,position,item,answer,confidence,elapsed_ms,answered_at,shown_at"
    assert [ln.split(",")[:5] for ln in lines[1:]] == [["reader-1", str(k), order[k], "real", "2"] for k in range(3)]
    assert "source" not in lines[0] and "sample_" not in r.get_data(as_text=True)


def test_security_headers(served: tuple[Path, Any, Study]) -> None:
    root, app, study = served
    r = app.test_client().get(f"/r/{study.token_of('reader-1')}")
    assert "script-src 'self'" in r.headers["Content-Security-Policy"]
    assert r.headers["Referrer-Policy"] == "no-referrer"
    assert r.headers["Cache-Control"] == "no-store"
    tags = re.findall(r"<script[^>]*>", r.get_data(as_text=True))
    assert tags == ['<script src="/assets/reader.js" defer>']  # no inline script
    assert app.test_client().get("/assets/reader.js").status_code == 200


def test_csv_export_checkpoints_the_wal(served: tuple[Path, Any, Study], tmp_path: Path) -> None:
    root, app, study = served
    tok = study.token_of("reader-1")
    order = study.orders["reader-1"]
    hold = sqlite3.connect(root / "answers.sqlite")  # another process with the database open (no checkpoint on close)
    hold.execute("SELECT COUNT(*) FROM answers").fetchall()  # opens the file; no transaction stays open
    try:
        c = app.test_client()
        for k in range(3):
            c.post(f"/r/{tok}/answer", data={"item": order[k], "position": str(k), "answer": "real"})
        assert (root / "answers.sqlite-wal").stat().st_size > 0  # the answers are still in the WAL
        assert c.get(f"/admin/{study.admin_token}/answers.csv").status_code == 200
        assert (root / "answers.sqlite-wal").stat().st_size == 0
        copy = tmp_path / "copy.sqlite"  # the database file alone now holds every answer
        copy.write_bytes((root / "answers.sqlite").read_bytes())
        with contextlib.closing(sqlite3.connect(copy)) as con:
            assert con.execute("SELECT COUNT(*) FROM answers").fetchone()[0] == 3
    finally:
        hold.close()
