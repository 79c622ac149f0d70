"""Where the evaluation's measures fail, measured on public data: the table of ``docs/evaluation.md``.

``python -m synthmed.evaluate.benchmark --data ../shared/data/medmnist/adrenalmnist3d.npz --out DIR``
builds synthetic "sources" from real AdrenalMNIST3D images (MedMNIST v2, CC BY 4.0) whose right answer
is known, and writes ``DIR/benchmark.json`` and ``DIR/benchmark.md`` (the table):

* **privacy**: the official train split is the generator's training set, the val split the audit's
  held-out images, the test split genuine non-copies. Copies of training images, 10 of each kind (exact,
  noisy with sigma 0.1, flipped left-right, shifted by one voxel), are planted in the *second* set of a
  folder; the test images are audited sharp and blurred (Gaussian sigma 1 and 2 voxels). Before: pixel-L2
  DCR below the held-out 5th percentile on the first set only (the audit before issue 14). After:
  :class:`synthmed.evaluate.copies.CopyAuditor` on every sample.
* **rankings** (in-domain autoencoder features, trained on the train split): clean real images, the
  same with Gaussian noise (sigma 0.2), pure uniform noise and heavily blurred images (sigma 2), ten sets
  of 128 each against the test split: which source wins FID, KID, precision and recall; MMD-RBF with a
  kernel width per source (before) and one width from the real features (after).
* **intervals**: coverage's interval for one set of real images (before: none; after: bootstrap, clipped).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter

from synthmed.evaluate.copies import CopyAuditor, SearchConfig
from synthmed.evaluate.fidelity import FidelityOptions, feature_metric_rows
from synthmed.evaluate.privacy import dcr_analysis
from synthmed.metrics import feature as fm


def _load(npz: Path) -> dict[str, np.ndarray]:
    z = np.load(npz)
    return {k: (z[f"{k}_images"].astype(np.float32) / 127.5 - 1.0)[:, None] for k in ("train", "val", "test")}


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    return gaussian_filter(x, (0, 0, *[sigma] * (x.ndim - 2))).astype(np.float32)


def privacy_cases(d: dict[str, np.ndarray], seed: int = 0, device: str = "cpu") -> dict[str, Any]:
    """Planted copies per kind and genuine / blurred non-copies: flagged counts before and after."""
    rng = np.random.default_rng(seed)
    train, hold, test = d["train"], d["val"], d["test"]
    src = rng.choice(len(train), 40, replace=False)
    planted = {"exact": train[src[:10]],
               "noisy (sigma 0.1)": np.clip(train[src[10:20]] + rng.normal(0, 0.1, train[src[10:20]].shape), -1, 1),
               "flipped left-right": train[src[20:30]][..., ::-1],
               "shifted 1 voxel": np.roll(train[src[30:40]], 1, axis=3)}
    t0 = time.perf_counter()
    audit = CopyAuditor(train, hold, SearchConfig(device=device))
    rows = []
    set_size = 95  # the issue's --set-size: a folder's first set held samples 0-94, the only ones audited before
    for j, (kind, x) in enumerate(planted.items()):
        x = np.asarray(x, np.float32)
        audit.reset()
        audit.add(np.concatenate([test[:set_size], x]))  # every sample: the copies sit in the second set
        found = [f for f in audit.result()["flagged"] if f["sample"] >= set_size]
        right = sum(f["train_index"] == src[10 * j + f["sample"] - set_size] for f in found)
        rows.append({"case": f"planted copies, {kind}, in the 2nd set", "n": len(x), "first_set_only": 0,
                     "pixel_every_sample": len(dcr_analysis(x, train, hold, "l2")["flagged"]),
                     "after": len(found), "after_right_source": int(right),
                     "transforms": sorted({f["transform"] for f in found})})
    for name, x in (("held-out real (test split)", test), ("blurred held-out, sigma 1", _blur(test, 1.0)),
                    ("blurred held-out, sigma 2", _blur(test, 2.0))):
        audit.reset()
        audit.add(x)
        rows.append({"case": name, "n": len(x), "first_set_only": None,
                     "pixel_every_sample": len(dcr_analysis(x, train, hold, "l2")["flagged"]),
                     "after": audit.result()["n_flagged"]})
    audit.reset()
    r = audit.result()
    return {"rows": rows, "threshold": audit.threshold, "expected_fpr": r["expected_fpr"],
            "heldout_fpr": r["heldout_fpr"], "n_train": len(train), "n_holdout": len(hold),
            "seconds": round(time.perf_counter() - t0, 1)}


def _features(images: np.ndarray, weights: Path, device: str) -> np.ndarray:
    import torch

    from synthmed.features.base import build_extractor

    ext = build_extractor("indomain-ae", weights=str(weights)).to(device).eval()
    with torch.no_grad():
        return np.concatenate([ext(torch.from_numpy(images[i:i + 64]).to(device)).cpu().numpy()
                               for i in range(0, len(images), 64)])


def ranking_cases(d: dict[str, np.ndarray], out: Path, iterations: int = 500, seed: int = 0,
                  device: str = "cpu") -> dict[str, Any]:
    """Sources with a known right answer against the test split in in-domain features."""
    from synthmed.features.indomain import train_indomain_extractor

    rng = np.random.default_rng(seed)
    weights = out / f"indomain-ae_it{iterations}.pt"
    if not weights.is_file():
        train_indomain_extractor(d["train"], weights, spatial_dims=3, iterations=iterations, seed=seed, device=device,
                                 progress=False)
    real = _features(d["test"], weights, device)
    sets = [rng.choice(len(d["train"]), 128, replace=False) for _ in range(10)]
    clean = [d["train"][s] for s in sets]
    sources = {"clean real": clean,
               "noisy real (sigma 0.2)": [np.clip(c + rng.normal(0, 0.2, c.shape), -1, 1).astype(np.float32) for c in clean],
               "pure noise": [rng.uniform(-1, 1, c.shape).astype(np.float32) for c in clean],
               "heavy blur (sigma 2)": [_blur(c, 2.0) for c in clean]}
    opts = FidelityOptions(n_boot=50, seed=seed)
    bandwidth = fm.median_heuristic(real)
    table: dict[str, Any] = {}
    for name, imgs in sources.items():
        feats = [_features(x, weights, device) for x in imgs]
        rows = {r["metric"]: r for r in feature_metric_rows(real, feats, opts, bandwidth)}
        per_source_bw = float(np.mean([fm.mmd_rbf(real, f).value for f in feats]))
        table[name] = {m: {k: rows[m][k] for k in ("value", "ci_low", "ci_high")} for m in
                       ("fid", "kid", "precision", "recall", "coverage", "mmd_rbf")}
        table[name]["mmd_rbf_width_per_source"] = per_source_bw
    one = feature_metric_rows(real, [_features(clean[0], weights, device)], FidelityOptions(n_boot=100, seed=seed))
    cov = next(r for r in one if r["metric"] == "coverage")
    return {"sources": table, "set_size": 128, "n_sets": 10, "n_reference": len(real), "feature_dim": real.shape[1],
            "extractor_iterations": iterations, "one_set_coverage": {k: cov[k] for k in ("value", "ci_low", "ci_high")}}


def markdown(res: dict[str, Any]) -> str:
    p = res["privacy"]
    lines = ["| case | images | before: first set only | before: pixel-L2 DCR test on every sample | after: "
             "near-copy audit |", "|---|---|---|---|---|"]
    for r in p["rows"]:
        extra = f" (right source {r['after_right_source']}; {', '.join(r['transforms'])})" if "transforms" in r else ""
        first = "-" if r["first_set_only"] is None else r["first_set_only"]
        lines.append(f"| {r['case']} | {r['n']} | {first} | {r['pixel_every_sample']} | {r['after']}{extra} |")
    h = p["heldout_fpr"]
    lines += ["", f"Audit: {p['n_train']} training, {p['n_holdout']} held-out images; threshold {p['threshold']:.3g}; "
                  f"false-positive bound {100 * p['expected_fpr']:.1f}%, measured on held-out images "
                  f"{h['flagged']}/{h['n']}; {p['seconds']} s.", ""]
    if "rankings" in res:
        rk = res["rankings"]
        lines += [f"Sets of {rk['set_size']} (x{rk['n_sets']}) vs {rk['n_reference']} test images, in-domain features "
                  f"({rk['feature_dim']}-d, {rk['extractor_iterations']} iterations):", "",
                  "| source | FID | KID | precision | recall | coverage | MMD-RBF one width | MMD-RBF width per source |",
                  "|---|---|---|---|---|---|---|---|"]

        def cell(v: dict[str, float]) -> str:
            return f"{v['value']:.3g} [{v['ci_low']:.3g}, {v['ci_high']:.3g}]"

        for name, t in rk["sources"].items():
            lines.append(f"| {name} | {cell(t['fid'])} | {cell(t['kid'])} | {cell(t['precision'])} | "
                         f"{cell(t['recall'])} | {cell(t['coverage'])} | {t['mmd_rbf']['value']:.3g} | "
                         f"{t['mmd_rbf_width_per_source']:.3g} |")
        c = rk["one_set_coverage"]
        lines += ["", f"One set of clean real images: coverage {c['value']:.3f}, 95% interval [{c['ci_low']:.3f}, "
                      f"{c['ci_high']:.3f}] (before: no interval with one set)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="adrenalmnist3d.npz (MedMNIST v2)")
    ap.add_argument("--out", required=True, help="folder for benchmark.json and benchmark.md")
    ap.add_argument("--extractor-iterations", type=int, default=500)
    ap.add_argument("--no-rankings", action="store_true", help="privacy cases only")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    d = _load(Path(args.data))
    res: dict[str, Any] = {"data": str(args.data), "privacy": privacy_cases(d, device=args.device)}
    if not args.no_rankings:
        res["rankings"] = ranking_cases(d, out, args.extractor_iterations, device=args.device)
    (out / "benchmark.json").write_text(json.dumps(res, indent=1, default=float), encoding="utf-8")
    (out / "benchmark.md").write_text(markdown(res), encoding="utf-8")
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
