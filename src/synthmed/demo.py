"""``synthmed demo``: the main job in miniature, with no download.

1. A two-class phantom cohort is built from the MNI152 template that ships inside nilearn
   (``synthmed.data.phantom``; the ``atrophy`` class has a documented grey-matter difference),
   written as raw, mis-aligned LAS NIfTI files -- or ``--data`` points at real data.
2. ``preprocess``: reorient, resample, register to MNI152, clip, rescale, trim, resize.
3. ``train``: alpha-SN-GAN (paper 000's winning architecture) at demo size.
4. ``sample``: a synthetic cohort as NIfTI with the prepared affine.
5. ``comparison.png``: real and synthetic slices side by side.
6. ``evaluate``: the evaluation report (``report/report.html`` and ``report/metrics.json``): feature
   metrics over several synthetic sets with CIs, image metrics, privacy, embeddings and pictures.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synthmed.config import load_config
from synthmed.data.prepared import load_prepared
from synthmed.errors import SynthmedError


@dataclass(frozen=True)
class DemoPlan:
    """Sizes of one demo variant."""

    n_per_class: int
    size: int
    config: str
    n_samples: int
    eval_sets: int
    #: steps of the report's in-domain extractor: about 0.6 s each at 32^3 on 2 CPU cores, so 500
    #: steps alone added over 5 minutes to the full demo
    extractor_iterations: int


FULL = DemoPlan(n_per_class=12, size=32, config="demo", n_samples=16, eval_sets=10, extractor_iterations=200)
QUICK = DemoPlan(n_per_class=4, size=32, config="demo_quick", n_samples=8, eval_sets=3, extractor_iterations=100)


def _prepare(out: Path, plan: DemoPlan, data: Path | None, label_column: str | None, progress: bool) -> Path:
    from synthmed.data.phantom import make_phantom_cohort
    from synthmed.data.preprocess import PreprocessOptions, run_preprocess

    prepared = out / "prepared"
    if data is None:
        raw = make_phantom_cohort(out / "raw", n_per_class=plan.n_per_class, seed=0)
        opts = PreprocessOptions(input=raw, out=prepared, reader="nifti", labels_csv=raw / "labels.csv",
                                 label_column="label", size=plan.size, n_folds=2, test_fraction=0.25,
                                 progress=progress)
    else:
        opts = PreprocessOptions(input=data, out=prepared, label_column=label_column, size=plan.size,
                                 progress=progress)
    return run_preprocess(opts)


def write_comparison(real: np.ndarray, synthetic: np.ndarray, path: Path,
                     spacing: list[float] | None = None) -> None:
    """A PNG with real images in the top half and synthetic ones in the bottom half.

    Args:
        real, synthetic: (N, 1, *spatial) in [-1, 1]; the first 8 of each are shown.
        spacing: voxel size per axis, to draw the slices in physical proportions.
    """
    from synthmed.data.preview import save_slice_grid

    n = min(8, len(real), len(synthetic))
    both = np.concatenate([np.asarray(real[:n], dtype=np.float32), np.asarray(synthetic[:n], dtype=np.float32)])
    save_slice_grid(both, path, titles=[f"real {i}" for i in range(n)] + [f"synthetic {i}" for i in range(n)],
                    ncols=4 if both.ndim == 5 else 8, spacing=spacing)


def run_demo(out: Path, quick: bool = False, data: Path | None = None, label_column: str | None = None,
             device: str = "auto", progress: bool = True, overrides: list[str] | None = None,
             plan: DemoPlan | None = None) -> Path:
    """Run the demo into ``out`` (replaced if it holds an earlier demo).

    Args:
        quick: toy size (``QUICK``) instead of ``FULL``.
        data: real data (any ``preprocess`` input) instead of the phantom cohort.
        overrides: ``--set`` overrides of the demo's training config.
        plan: explicit sizes (overrides ``quick``).
    """
    from synthmed.generate.sample import load_run, sample
    from synthmed.train.loop import train

    plan = plan or (QUICK if quick else FULL)
    if data is not None and not data.exists():
        raise SynthmedError(f"--data {data}: does not exist")
    if out.exists():
        if not (out / "demo.done").exists() and any(out.iterdir()):
            raise SynthmedError(f"{out} exists and is not a finished demo folder; choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    prepared = _prepare(out, plan, data, label_column, progress)
    cfg = load_config(plan.config, [f"train.device={device}", *(overrides or [])])
    run_dir = train(cfg, prepared, out / "run", progress=progress)
    synth_dir = sample(run_dir, plan.n_samples, out / "synthetic", device=device, progress=progress)
    ds = load_prepared(prepared)
    run = load_run(run_dir, device=device)
    from synthmed.generate.sample import generate_batch

    synthetic = generate_batch(run, list(range(plan.n_samples)))
    write_comparison(np.asarray(ds.images[: plan.n_samples]), synthetic, out / "comparison.png",
                     spacing=ds.meta.get("spacing"))
    _evaluate(prepared, run_dir, out / "report", plan, device, progress)
    (out / "demo.done").write_text(f"prepared={prepared}\nrun={run_dir}\nsynthetic={synth_dir}\n", encoding="utf-8")
    return out


def _evaluate(prepared: Path, run_dir: Path, out: Path, plan: DemoPlan, device: str, progress: bool) -> Path:
    """The evaluation report of the demo's run against all of its real images."""
    import torch

    from synthmed.evaluate.fidelity import FidelityOptions
    from synthmed.evaluate.runner import EvaluateOptions, evaluate

    dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    # all real images: the demo's phantom cohort has too few test images for the k-NN metrics
    opts = EvaluateOptions(split="all", n_sets=plan.eval_sets, device=dev, progress=progress, ssim_queries=8,
                           fidelity=FidelityOptions(extractor_iterations=plan.extractor_iterations))
    return evaluate(prepared, run_dir, out, opts, names=["alpha-SN-GAN"])
