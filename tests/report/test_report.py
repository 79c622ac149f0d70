"""HTML report writer and report figures."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synthmed.report import (
    Estimate,
    Figure,
    KeyValues,
    Report,
    Table,
    Text,
    default_axial_slices,
    find_chromium,
    format_ci,
    format_value,
    read_metrics_csv,
    render_screenshot,
    slice_comparison_figure,
    training_curves_figure,
    write_report,
)


def _png_bytes(size: tuple[int, int] = (6, 4), value: int = 200) -> bytes:
    buf = io.BytesIO()
    Image.new("L", size, value).save(buf, format="PNG")
    return buf.getvalue()


def _blob_volumes(n: int, size: int, label_of: list[int]) -> np.ndarray:
    g = np.stack(np.meshgrid(*[np.linspace(-1, 1, size)] * 3, indexing="ij"))
    r = np.sqrt((g**2).sum(0))
    return np.stack([np.where(r < 0.4 + 0.2 * label_of[i], 0.8, -1.0)[None] for i in range(n)]).astype(np.float32)


def _full_report(tmp_path: Path) -> Report:
    png = tmp_path / "fig.png"
    png.write_bytes(_png_bytes())
    rep = Report("Cohort <b>report</b>")
    rep.add("Fidelity",
            KeyValues({"extractor": "medicalnet_resnet10", "weights_sha256": "ab" * 32,
                       "preprocessing": {"resize": [64, 64, 64]}, "n_real": 40, "n_synthetic": 200},
                      caption="Feature space"),
            Table(["model", "FID", "KID", "n", "converged", "note"],
                  [["alpha-SN-GAN", Estimate(12.3456, 10.1, 14.55), 0.0012345, 200, True, None],
                   ["HA-GAN", Estimate(15.0, 13.0, 17.0), float("nan"), np.int64(200), np.bool_(False), "x"]],
                  caption="FID/KID in medicalnet_resnet10 features <script>alert(1)</script>"))
    rep.add("Pictures", Figure(png, caption="from a path"), Figure(_png_bytes(value=10), caption="from bytes"),
            Text("First paragraph with <tags> & ampersands.\nSecond line.\n\n- item one\n- item two"))
    return rep


def test_report_all_blocks_self_contained(tmp_path: Path) -> None:
    html_path = write_report(_full_report(tmp_path), tmp_path / "out")
    assert html_path == tmp_path / "out" / "report.html"
    text = html_path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and "</html>" in text
    assert 'src="http' not in text and "<link" not in text and "<script" not in text
    assert "url(" not in text and "@import" not in text
    srcs = re.findall(r'<img src="([^"]+)"', text)
    assert len(srcs) == 2 and all(s.startswith("data:image/png;base64,") for s in srcs)
    decoded = Image.open(io.BytesIO(base64.b64decode(srcs[1].split(",", 1)[1])))
    assert decoded.size == (6, 4)
    assert "12.3 [10.1, 14.6]" in text and "0.00123" in text and "<li>item one</li>" in text
    assert "ab" * 32 in text and "Feature space" in text
    # no temporary files left behind by the atomic writes
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["metrics.json", "report.html"]


def test_html_escaping(tmp_path: Path) -> None:
    text = write_report(_full_report(tmp_path), tmp_path / "out").read_text(encoding="utf-8")
    assert "<script>alert(1)</script>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<title>Cohort &lt;b&gt;report&lt;/b&gt;</title>" in text
    assert "with &lt;tags&gt; &amp; ampersands.<br>Second line." in text


def test_metrics_json_round_trips_tables(tmp_path: Path) -> None:
    rep = _full_report(tmp_path)
    write_report(rep, tmp_path / "out")
    data = json.loads((tmp_path / "out" / "metrics.json").read_text(encoding="utf-8"))
    assert data["title"] == rep.title
    blocks = data["sections"][0]["blocks"]
    assert [b["type"] for b in blocks] == ["key_values", "table"]
    assert blocks[0]["items"]["weights_sha256"] == "ab" * 32
    assert blocks[0]["items"]["preprocessing"] == {"resize": [64, 64, 64]}
    table = blocks[1]
    assert table["columns"] == ["model", "FID", "KID", "n", "converged", "note"]
    assert table["rows"][0] == ["alpha-SN-GAN", {"value": 12.3456, "ci_low": 10.1, "ci_high": 14.55},
                                0.0012345, 200, True, None]
    assert table["rows"][1][2] is None and table["rows"][1][3] == 200 and table["rows"][1][4] is False
    assert data["sections"][1]["blocks"] == []  # figures and text are not metrics


def test_failed_render_leaves_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "not_an_image.png"
    bad.write_text("hello")
    with pytest.raises(ValueError, match="not a PNG"):
        write_report(_bad_report(bad), tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []
    with pytest.raises(ValueError, match="row 0 has 1 cells"):
        Table(["a", "b"], [[1]])


def _bad_report(bad: Path) -> Report:
    rep = Report("r")
    rep.add("s", Table(["a"], [[1]]), Figure(bad))
    return rep


def test_number_formatting() -> None:
    assert format_ci(1.2345, 1.0111, 1.4499) == "1.23 [1.01, 1.45]"
    assert format_ci(12.3456, 10.1, 14.55) == "12.3 [10.1, 14.6]"
    assert format_ci(0.5, 0.25, 0.75, digits=2) == "0.50 [0.25, 0.75]"
    assert str(Estimate(1.2345, 1.0111, 1.4499)) == "1.23 [1.01, 1.45]"
    assert format_value(3) == "3" and format_value(np.int32(7)) == "7"
    assert format_value(1234.5678) == "1235" and format_value(0.012345) == "0.0123"
    assert format_value(1.5e-6) == "1.50e-06" and format_value(float("nan")) == "\u2014"
    assert format_value(None) == "\u2014" and format_value(True) == "yes" and format_value("x") == "x"
    assert format_value(np.float32(0.5)) == "0.500"


def test_default_axial_slices_scale() -> None:
    assert default_axial_slices(64) == [16, 24, 32, 40, 48]
    assert default_axial_slices(32) == [8, 12, 16, 20, 24]
    assert default_axial_slices(128) == [32, 48, 64, 80, 96]
    assert all(0 <= k < 4 for k in default_axial_slices(4))


def test_slice_comparison_figures(tmp_path: Path) -> None:
    real = _blob_volumes(6, 16, [0, 1, 0, 1, 0, 1])
    syn = _blob_volumes(3, 16, [0, 0, 1])[:, 0]  # channel-less input is accepted
    lr, ls = np.array([0, 1, 0, 1, 0, 1]), np.array([0, 0, 1])
    ax = slice_comparison_figure(real, syn, tmp_path / "ax.png", labels_real=lr, labels_synthetic=ls,
                                 class_names=["CN", "AD"], n_per_class=2, zoom=1)
    three = slice_comparison_figure(real, syn, tmp_path / "tp.png", labels_real=lr, labels_synthetic=ls,
                                    class_names=["CN", "AD"], n_per_class=2, view="three-plane", zoom=1)
    with Image.open(ax) as a, Image.open(three) as t:
        a.verify()
        t.verify()
    with Image.open(ax) as a, Image.open(three) as t:
        # 2 classes x 2 rows, 2 columns; axial: 5 slices of 16 px, three-plane: 3 panels
        assert a.size == (2 * (5 * 16 + 4 * 4 + 4) + 4, 4 * (16 + 12 + 4) + 4)
        assert t.size[0] == 2 * (3 * 16 + 2 * 4 + 4) + 4 and t.size[1] == a.size[1]
    unl = slice_comparison_figure(real[:, 0, :, :, 8], syn[:, :, :, 8], tmp_path / "2d.png", n_per_class=3)
    assert Image.open(unl).format == "PNG"
    with pytest.raises(ValueError, match="both"):
        slice_comparison_figure(real, syn, tmp_path / "x.png", labels_real=lr)
    with pytest.raises(ValueError, match="outside"):
        slice_comparison_figure(real, syn, tmp_path / "x.png", axial_slices=[3, 16])
    assert not list(tmp_path.glob(".*.tmp"))


def test_training_curves_from_csv(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    lines = ["step,loss_d,loss_g,fid"] + [f"{s},{1 / (s + 1):.4f},{0.5 + 0.01 * s:.4f},{'nan' if s % 5 else 40 - s}"
                                         for s in range(0, 50)]
    (run / "metrics.csv").write_text("\n".join(lines) + "\n")
    steps, cols = read_metrics_csv(run)
    assert len(steps) == 50 and list(cols) == ["loss_d", "loss_g", "fid"]
    assert np.isfinite(cols["fid"]).sum() == 10
    out = training_curves_figure(run, tmp_path / "curves.png")
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] >= 800
        assert np.asarray(im.convert("L")).std() > 1  # something was drawn
    (tmp_path / "bad.csv").write_text("epoch,loss\n1,2\n")
    with pytest.raises(ValueError, match="step"):
        training_curves_figure(tmp_path / "bad.csv", tmp_path / "c2.png")
    with pytest.raises(ValueError, match="no numeric"):
        training_curves_figure(run, tmp_path / "c3.png", columns=["missing"])


def test_report_with_figures_and_screenshot(tmp_path: Path) -> None:
    """End to end: figures into a report; rendered by headless Chromium where one is installed."""
    real = _blob_volumes(2, 16, [0, 1])
    fig = slice_comparison_figure(real, real[::-1], tmp_path / "cmp.png", zoom=1)
    rep = Report("Screenshot check")
    rep.add("Slices", Figure(fig, caption="real | synthetic"), Table(["m"], [[Estimate(1.0, 0.5, 1.5)]]))
    html_path = write_report(rep, tmp_path / "out")
    if find_chromium() is None:
        assert render_screenshot(html_path, tmp_path / "shot.png") is None
        pytest.skip("no chromium / chromium-browser on PATH")
    shot = render_screenshot(html_path, tmp_path / "shot.png", width=800, height=600)
    assert shot is not None and shot.is_file()
    with Image.open(shot) as im:
        arr = np.asarray(im.convert("L"))
    assert im.size == (800, 600) and arr.std() > 1.0  # not blank


def test_render_screenshot_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The browser is called headless, offline, with a fresh profile; a stand-in records the call."""
    import sys

    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "argv.json"
    fake = bindir / "chromium"
    fake.write_text(
        f"#!{sys.executable}\nimport json, sys\nfrom PIL import Image\n"
        f"json.dump(sys.argv[1:], open({str(log)!r}, 'w'))\n"
        "shot = next(a.split('=', 1)[1] for a in sys.argv if a.startswith('--screenshot='))\n"
        "Image.new('RGB', (8, 8), (255, 0, 0)).save(shot)\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(bindir))
    html_path = write_report(Report("r"), tmp_path / "out")
    shot = render_screenshot(html_path, tmp_path / "shots" / "s.png", width=640, height=480)
    assert shot == tmp_path / "shots" / "s.png" and Image.open(shot).size == (8, 8)
    argv = json.loads(log.read_text(encoding="utf-8"))
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=640,480"):
        assert flag in argv
    assert argv[-1] == html_path.resolve().as_uri()
    assert any(a.startswith("--user-data-dir=") for a in argv)
    assert not Path(next(a for a in argv if a.startswith("--user-data-dir=")).split("=", 1)[1]).exists()
