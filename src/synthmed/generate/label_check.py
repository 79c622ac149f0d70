"""Does conditioning work?  A classifier trained on real data labels synthetic samples.

For one or more conditional runs (or per-class run pairs) on the same prepared dataset:

1. train the paper 000 diagnosis CNN (``diagnosis-cnn``, Fig. S1) on the real ``train`` split of fold 0,
   early-stopped on the ``val`` split, and report its accuracy on the held-out real ``test`` split;
2. generate ``n`` samples per requested class from each source and let the classifier label them:
   agreement (accuracy against the requested labels) overall and per class;
3. per-class fidelity in the feature space of the in-domain autoencoder (trained on the real training
   split): FID, precision and recall (k = 3) of each class's synthetic samples against the real
   images of that class (paper 000 Fig. 4 style).

``python -m synthmed.generate.label_check --prepared P --source NAME=RUN [NAME=RUN_CLASS0,RUN_CLASS1 ...]
--out DIR`` writes ``DIR/label_check.json`` and ``DIR/label_check.md``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synthmed.data.prepared import load_prepared
from synthmed.io_utils import write_json_atomic, write_text_atomic


def train_real_classifier(prepared: str | Path, out_dir: Path, epochs: int = 30, seed: int = 0,
                          progress: bool = False) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The diagnosis CNN trained on the real training split (fold 0), with its real test accuracy."""
    from synthmed.utility.classifiers import build_classifier
    from synthmed.utility.training import fit_classifier

    ds = load_prepared(prepared)
    labels = ds.labels
    assert labels is not None
    k = len(ds.classes)
    rows = {s: ds.indices(s, 0) for s in ("train", "val", "test")}
    data = {s: (np.asarray(ds.images[r], dtype=np.float32), labels[r]) for s, r in rows.items()}
    torch.manual_seed(seed)
    model = build_classifier("diagnosis-cnn", ds.spatial_dims, ds.shape, k)
    fit = fit_classifier(model, data["train"], data["val"], k, lr=1e-3, weight_decay=0.01, batch_size=32,
                         max_epochs=epochs, patience=5, eval_batch_size=64, seed=seed, progress=progress)
    model.load_state_dict(fit.state)
    pred = predict_labels(model, data["test"][0], k)
    info = {"n_train": len(rows["train"]), "n_val": len(rows["val"]), "n_test": len(rows["test"]),
            "test_accuracy": float((pred == data["test"][1]).mean()), "epochs": epochs,
            "best_epoch": fit.best_epoch}
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out_dir / "real_classifier.pt")
    return model, info


def predict_labels(model: torch.nn.Module, images: np.ndarray, k: int) -> np.ndarray:
    from synthmed.utility.training import predict_scores

    s = predict_scores(model, images, k, batch_size=64)
    return (s > 0.5).astype(np.int64) if k == 2 else s.argmax(1)


def _source_images(spec: str, k: int, n: int, seed: int) -> list[np.ndarray]:
    """n synthetic images of each class from a conditional run, or from a comma-separated list of per-class runs."""
    from synthmed.generate.sample import generate_batch, load_run

    parts = spec.split(",")
    out = []
    for c in range(k):
        run = load_run(parts[c] if len(parts) > 1 else parts[0], device="cpu")
        imgs = []
        for s in range(0, n, 32):
            seeds = list(range(seed + s, seed + min(n, s + 32)))
            lab = torch.full((len(seeds),), c) if run.conditional else None
            imgs.append(generate_batch(run, seeds, lab))
        out.append(np.concatenate(imgs))
    return out


def check(prepared: str | Path, sources: dict[str, str], out_dir: str | Path, n: int = 200, seed: int = 10_000,
          epochs: int = 30, extractor_iterations: int = 1000, progress: bool = False) -> dict[str, Any]:
    """Agreement and per-class fidelity of every source (see the module docstring)."""
    from synthmed.features.base import extract_features
    from synthmed.features.indomain import load_indomain_extractor, train_indomain_extractor
    from synthmed.metrics.feature import fid, precision_recall

    out = Path(out_dir)
    ds = load_prepared(prepared)
    classes = ds.classes
    k = len(classes)
    model, clf_info = train_real_classifier(prepared, out, epochs, progress=progress)
    ext_path = out / "indomain_extractor.pt"
    if not ext_path.is_file():
        train_indomain_extractor(prepared, ext_path, iterations=extractor_iterations, progress=progress)
    ext = load_indomain_extractor(ext_path)
    labels = ds.labels
    assert labels is not None
    real_rows = ds.indices("trainval")
    real_feat = extract_features(ext, np.asarray(ds.images[real_rows], dtype=np.float32), progress=False)
    real_lab = labels[real_rows]
    result: dict[str, Any] = {"prepared": str(Path(prepared).resolve()), "classes": classes, "n_per_class": n,
                              "classifier": clf_info, "extractor_sha256": ext.weights_sha256, "sources": {}}
    for name, spec in sources.items():
        per_class = _source_images(spec, k, n, seed)
        rec: dict[str, Any] = {"spec": spec, "per_class": {}}
        hits = 0
        for c, imgs in enumerate(per_class):
            pred = predict_labels(model, imgs, k)
            feat = extract_features(ext, imgs, progress=False)
            real_c = real_feat[real_lab == c]
            pr = precision_recall(real_c, feat, k=3)
            rec["per_class"][classes[c]] = {
                "agreement": float((pred == c).mean()),
                "predicted_counts": {classes[j]: int((pred == j).sum()) for j in range(k)},
                "fid": float(fid(real_c, feat).value), "precision": float(pr.precision), "recall": float(pr.recall),
                "n_real": int(len(real_c))}
            hits += int((pred == c).sum())
        rec["agreement"] = hits / (n * k)
        result["sources"][name] = rec
    write_json_atomic(out / "label_check.json", result)
    write_text_atomic(out / "label_check.md", to_markdown(result))
    return result


def to_markdown(result: dict[str, Any]) -> str:
    classes = result["classes"]
    c = result["classifier"]
    lines = [f"Real-data classifier (diagnosis-cnn): test accuracy {c['test_accuracy']:.3f} on {c['n_test']} held-out "
             f"real images (trained on {c['n_train']}).", "",
             "| method | agreement | " + " | ".join(f"{k} agreement | {k} FID | {k} precision | {k} recall" for k in classes) + " |",
             "|---|---|" + "---|" * (4 * len(classes))]
    for name, rec in result["sources"].items():
        cells = []
        for k in classes:
            p = rec["per_class"][k]
            cells += [f"{p['agreement']:.3f}", f"{p['fid']:.2f}", f"{p['precision']:.3f}", f"{p['recall']:.3f}"]
        lines.append(f"| {name} | {rec['agreement']:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m synthmed.generate.label_check", description=__doc__.splitlines()[0])
    ap.add_argument("--prepared", required=True)
    ap.add_argument("--source", action="append", required=True, metavar="NAME=RUN[,RUN...]",
                    help="a conditional run, or one per-class run per class in class order")
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=200, help="synthetic samples per class")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--extractor-iterations", type=int, default=1000)
    a = ap.parse_args(argv)
    sources = dict(s.split("=", 1) for s in a.source)
    res = check(a.prepared, sources, a.out, n=a.n, epochs=a.epochs, extractor_iterations=a.extractor_iterations,
                progress=True)
    print(to_markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
