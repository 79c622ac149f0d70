"""`synthmed train / sample / evaluate --reconstruct` for a VAE through the CLI (paper 002, Sec. 3.3, Fig. 3)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from synthmed.cli import main
from synthmed.data.prepared import load_prepared
from synthmed.generate.sample import load_run
from synthmed.metrics.image import laplacian_sharpness

TINY = ["model.latent_dim=8", "model.base_channels=4", "model.max_channels=8", "train.iterations=3",
        "train.n_preview=2", "train.batch_size=4"]
EVAL = ["--n-sets", "1", "--extractor-iterations", "5", "--no-privacy", "--embeddings", "--no-screenshot",
        "--no-progress", "--device", "cpu"]


def _sets(*pairs: str) -> list[str]:
    return [a for kv in pairs for a in ("--set", kv)]


@pytest.fixture
def prep(tmp_path: Path) -> Path:
    from synth_testdata import make_tiny_prepared

    return make_tiny_prepared(tmp_path / "prep", 2, 16, 12)


def test_train_sample_evaluate_reconstruct(prep: Path, tmp_path: Path, capsys) -> None:
    run, gan, samp, rep = (tmp_path / n for n in ("vae", "gan", "vae_samples", "report"))
    assert main(["train", "vae", "--data", str(prep), "--out", str(run), "--no-progress", *_sets(*TINY)]) == 0
    assert main(["train", "sngan", "--data", str(prep), "--out", str(gan), "--no-progress", *_sets(*TINY)]) == 0
    assert main(["sample", str(run), "--n", "12", "--out", str(samp), "--no-progress", "--device", "cpu"]) == 0
    files = [r["file"] for r in csv.DictReader(open(samp / "manifest.csv", encoding="utf-8"))]
    assert len(files) == 12 and all(f.endswith(".png") for f in files)

    rc = main(["evaluate", "--real", str(prep), "--synthetic", str(run), str(samp), str(gan),
               "--names", "vae", "sampled", "sngan", "--out", str(rep), "--reconstruct", "--split", "all", *EVAL])
    assert rc == 0, capsys.readouterr().err
    m = json.loads((rep / "metrics.json").read_text(encoding="utf-8"))["results"]["sources"]
    rec = m["vae"]["reconstruction"]
    assert rec["model"] == "vae" and rec["n_images"] == 12 and len(rec["per_image"]) == 12

    # independent reference: reconstruct with the loaded model, MSE and Laplacian variance on [0, 1]
    real = np.asarray(load_prepared(prep).images, dtype=np.float32)
    loaded = load_run(run, device="cpu")
    recon = loaded.family.reconstruct_images(loaded.nets, real)
    a, b = (recon + 1) / 2, (real + 1) / 2
    mse = ((a - b) ** 2).reshape(12, -1).mean(axis=1)
    assert rec["mse"]["mean"] == pytest.approx(mse.mean(), rel=1e-5)
    assert rec["sharpness_reconstruction"]["mean"] == pytest.approx(laplacian_sharpness(recon).mean(), rel=1e-5)
    assert rec["sharpness_ratio"] == pytest.approx(laplacian_sharpness(recon).mean() / laplacian_sharpness(real).mean(),
                                                   rel=1e-5)
    # a `synthmed sample` folder reconstructs with the checkpoint its sample.json names: same numbers
    assert m["sampled"]["reconstruction"]["checkpoint_sha256"] == rec["checkpoint_sha256"]
    assert m["sampled"]["reconstruction"]["mse"]["mean"] == pytest.approx(rec["mse"]["mean"], rel=1e-6)
    # a GAN has no encoder: skipped with the reason, the rest of the report is still written
    assert "no encoder" in m["sngan"]["reconstruction"]["skipped"]
    assert {r["metric"] for r in m["sngan"]["image_metrics"]} >= {"dataset_similarity", "isd_synthetic",
                                                                  "min_isd_synthetic", "laplacian_sharpness_synthetic"}
    html = (rep / "report.html").read_text(encoding="utf-8")
    assert "Reconstruction: vae (paper 002, Fig. 3)" in html and "Reconstruction: sngan" in html
    assert (rep / "figures" / "vae_reconstruction.png").is_file() and "data:image/png;base64" in html

    # the checkpoint changed after sampling: the sampled folder no longer stands for that model
    ckpt = run / "checkpoints" / "last.pt"
    ckpt.write_bytes(ckpt.read_bytes() + b"\0")
    from synthmed.evaluate.reconstruction import source_model

    loaded2, why = source_model(samp)
    assert loaded2 is None and "changed since" in why
    assert source_model(tmp_path)[1].endswith("reconstruction needs the trained model.")
