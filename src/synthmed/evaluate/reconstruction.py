"""Reconstruction quality of models with an encoder (paper 002, Sec. 3.3 and Fig. 3).

Paper 002 evaluates "the quality of the image reconstruction ... on a set of 1000 reconstructed images
and compared to the original 1000 images, using the pixel-by-pixel-wise mean squared error.
Additionally, the sharpness of the reconstructed image was compared to the original image using the
Laplace Variance Score."  Its numbers: MSE 0.004 +- 0.02 (vanilla VAE), 0.008 +- 0.03 (IntroVAE and
DFC-VAE); sharpness 349 +- 160 (VAE), 715 +- 254 (DFC-VAE), 1,222 +- 490 (IntroVAE) against
1,495 +- 659 for the originals, i.e. reconstructions keep 23%, 48% and 82% of the originals'
sharpness.  Both metrics are computed on intensities mapped to [0, 1] as in the paper
(:mod:`synthmed.metrics.image`); the sharpness ratio is free of the paper's (8-bit) intensity scale.

Reconstructions are ``G(encode(x))`` with the posterior mean for the VAEs (no sampling), in eval mode
(:meth:`synthmed.models.base.ModelFamily.reconstruct_images`), so they do not depend on the batch size.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import numpy as np

from synthmed.data.preview import save_slice_grid
from synthmed.errors import DataError
from synthmed.generate.sample import LoadedRun, load_run
from synthmed.io_utils import sha256_file
from synthmed.metrics.image import laplacian_sharpness, reconstruction_mse

#: Images reconstructed by default (paper 002: 1000).
PAPER_N_IMAGES = 1000


def _as_run(run: str | Path | LoadedRun, device: str) -> LoadedRun:
    return run if isinstance(run, LoadedRun) else load_run(run, device=device)


def source_model(path: str | Path, device: str = "cpu") -> tuple[LoadedRun | None, str | None]:
    """The trained model behind a synthetic source of ``synthmed evaluate``, or why there is none.

    A run folder gives its last checkpoint; a folder written by ``synthmed sample`` gives the checkpoint
    its ``sample.json`` names, when that file still exists inside a run folder with the SHA-256 recorded
    at sampling time.  Models without an encoder (the GANs) have nothing to reconstruct with (paper 002,
    Sec. 3.3: "GANs do not reconstruct images").

    Returns:
        ``(loaded run, None)`` or ``(None, reason)``; the reason is one sentence for the report.
    """
    from synthmed.evaluate.synthetic import is_run_folder

    path = Path(path)
    if is_run_folder(path):
        loaded = load_run(path, device=device)
    else:
        meta_path = path / "sample.json"
        if not meta_path.is_file():
            return None, f"{path}: neither a run folder nor a `synthmed sample` folder with sample.json; " \
                         "reconstruction needs the trained model."
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            return None, f"{meta_path}: unreadable ({e}); reconstruction needs the trained model."
        ckpt = Path(str(meta.get("checkpoint", "")))
        run_dir = ckpt.parent.parent
        if not ckpt.is_file() or not is_run_folder(run_dir):
            return None, f"{meta_path}: the checkpoint it was sampled from ({ckpt}) is not in a run folder " \
                         "any more; reconstruction needs the trained model."
        if meta.get("checkpoint_sha256") and sha256_file(ckpt) != meta["checkpoint_sha256"]:
            return None, f"{ckpt}: changed since {path} was sampled (SHA-256 differs from sample.json); " \
                         "evaluate the run folder itself to reconstruct with the current weights."
        loaded = load_run(run_dir, checkpoint=ckpt, device=device)
    if not loaded.family.has_encoder:
        return None, f"model {loaded.cfg.model.name!r} has no encoder, so it does not reconstruct images " \
                     "(paper 002, Sec. 3.3: only the VAEs are evaluated on reconstruction)."
    return loaded, None


def _stats(x: np.ndarray) -> dict[str, float]:
    return {"mean": float(np.mean(x)), "std": float(np.std(x)), "median": float(np.median(x))}


def reconstruct(run: str | Path | LoadedRun, images: np.ndarray, batch_size: int = 8,
                device: str = "cpu", sample_seed: int | None = None, labels: np.ndarray | None = None) -> np.ndarray:
    """Reconstructions (N, 1, *spatial) float32 in [-1, 1] of ``images`` by a trained run.

    ``sample_seed``: None decodes the posterior mean (VAEs) or the deterministic code; an int
    decodes one posterior sample per image (see ``ModelFamily.reconstruct_images``).

    Raises:
        ConfigError: if the run's model has no encoder (e.g. ``sngan``).
        DataError: if the images do not have the run's image shape.
    """
    loaded = _as_run(run, device)
    images = np.asarray(images, dtype=np.float32)
    want = (1, *loaded.data["shape"])
    if images.ndim != len(want) + 1 or tuple(images.shape[1:]) != want:
        raise DataError(f"images of shape {images.shape[1:]} do not fit the run's (1, {loaded.data['shape']}) "
                        f"(model {loaded.cfg.model.name!r})")
    kw: dict[str, Any] = {}
    if labels is not None and loaded.conditional:
        # a conditional model (the CVAE) encodes and decodes each image with its own label
        if "labels" not in inspect.signature(loaded.family.reconstruct_images).parameters:
            raise DataError(f"model {loaded.cfg.model.name!r} is conditional but cannot reconstruct with labels")
        labels = np.asarray(labels)
        if len(labels) != len(images):
            raise DataError(f"{len(labels)} labels for {len(images)} images to reconstruct")
        kw["labels"] = labels
    return loaded.family.reconstruct_images(loaded.nets, images, batch_size=batch_size, sample_seed=sample_seed,
                                            **kw)


def reconstruction_metrics(run: str | Path | LoadedRun, real_images: np.ndarray, batch_size: int = 8,
                           max_images: int | None = PAPER_N_IMAGES, device: str = "cpu",
                           figure_path: str | Path | None = None, n_figure: int = 8,
                           value_range: tuple[float, float] = (-1.0, 1.0),
                           sample_seed: int | None = None, labels: np.ndarray | None = None) -> dict[str, Any]:
    """Per-image and mean reconstruction MSE and Laplacian sharpness (paper 002, Sec. 3.3, Fig. 3).

    Args:
        run: a run folder, or a run loaded with :func:`synthmed.generate.sample.load_run`.
        real_images: (N, 1, *spatial) originals in ``value_range``; the first ``max_images`` are used
            (no selection), so pass the split you mean (held-out images test generalisation).
        batch_size: images per forward pass (results do not depend on it).
        max_images: at most this many images (paper 002: 1000); None for all.
        device: where to run the model (ignored for an already loaded run).
        figure_path: if given, a PNG of originals beside reconstructions (:func:`reconstruction_figure`).
        n_figure: image pairs in the figure.
        value_range: intensity range of the images, mapped to [0, 1] for both metrics.
        sample_seed: None (default) decodes the posterior mean; an int decodes a seeded posterior
            sample per image, the decoder's input during training (they differ most for a VAE
            whose unused latent dimensions still carry unit-variance noise).

    Returns:
        A JSON-able dict: ``model``, ``checkpoint_sha256``, ``step``, ``n_images``, summaries
        (``mean``/``std``/``median``) of ``mse``, ``sharpness_original`` and
        ``sharpness_reconstruction``, ``sharpness_ratio`` (mean reconstruction / mean original),
        ``per_image`` rows (``index``, ``mse``, ``sharpness_original``, ``sharpness_reconstruction``)
        and ``figure`` (path or None).
    """
    loaded = _as_run(run, device)
    real = np.asarray(real_images, dtype=np.float32)
    if max_images is not None:
        real = real[:max_images]
        labels = None if labels is None else np.asarray(labels)[:max_images]
    if len(real) == 0:
        raise DataError("no images to reconstruct")
    rec = reconstruct(loaded, real, batch_size, sample_seed=sample_seed, labels=labels)
    mse = reconstruction_mse(rec, real, value_range)
    sharp_o = laplacian_sharpness(real, value_range)
    sharp_r = laplacian_sharpness(rec, value_range)
    fig = None
    if figure_path is not None:
        fig = str(reconstruction_figure(real, rec, figure_path, n=n_figure,
                                        spacing=loaded.data.get("spacing")))
    return {
        "model": loaded.cfg.model.name,
        "checkpoint_sha256": loaded.checkpoint_sha256,
        "step": loaded.step,
        "n_images": int(len(real)),
        "code": "posterior mean" if sample_seed is None else f"posterior sample (seeds {sample_seed}+i)",
        "value_range": list(value_range),
        "intensities": "mapped to [0, 1] (paper 002, Sec. 3.3)",
        "mse": _stats(mse),
        "sharpness_original": _stats(sharp_o),
        "sharpness_reconstruction": _stats(sharp_r),
        "sharpness_ratio": float(np.mean(sharp_r) / np.mean(sharp_o)) if np.mean(sharp_o) > 0 else float("nan"),
        "per_image": [{"index": i, "mse": float(m), "sharpness_original": float(a),
                       "sharpness_reconstruction": float(b)}
                      for i, (m, a, b) in enumerate(zip(mse, sharp_o, sharp_r, strict=True))],
        "figure": fig,
    }


def reconstruction_figure(originals: np.ndarray, reconstructions: np.ndarray, path: str | Path, n: int = 8,
                          spacing: list[float] | None = None, zoom: int | None = None) -> Path:
    """Originals (left) beside their reconstructions (right), one pair per row, as paper 002 Fig. 3.

    The first ``n`` pairs are shown; 3D images show their middle axial, coronal and sagittal slices.
    ``zoom`` defaults to 4 for images of at most 32 pixels a side, else 2.
    """
    if originals.shape != reconstructions.shape:
        raise ValueError(f"originals {originals.shape} and reconstructions {reconstructions.shape} differ")
    k = min(n, len(originals))
    cells = np.stack([im for pair in zip(originals[:k], reconstructions[:k], strict=True) for im in pair])
    titles = [t for i in range(k) for t in (f"orig {i + 1}", f"recon {i + 1}")]
    zoom = zoom or (4 if max(originals.shape[2:]) <= 32 else 2)
    return save_slice_grid(cells, path, titles=titles, ncols=2, zoom=zoom, spacing=spacing)


def reconstruction_section(run: str | Path | LoadedRun, real_images: np.ndarray, figure_path: str | Path,
                           device: str = "cpu", batch_size: int = 8, max_images: int | None = PAPER_N_IMAGES,
                           sample_seed: int | None = None,
                           labels: np.ndarray | None = None) -> tuple[list[Any], dict[str, Any]]:
    """Report blocks (table, figure, note) and the JSON result for ``synthmed evaluate --reconstruct``.

    Returns:
        ``(blocks, result)``: blocks for :meth:`synthmed.report.html.Report.add`; ``result`` is the
        dict of :func:`reconstruction_metrics`, per-image rows included.
    """
    from synthmed.report.html import Figure, Table, Text

    res = reconstruction_metrics(run, real_images, batch_size=batch_size, max_images=max_images, device=device,
                                 figure_path=figure_path, sample_seed=sample_seed, labels=labels)

    def pm(s: dict[str, float]) -> str:
        return f"{s['mean']:.4g} ± {s['std']:.2g}"

    table = Table(["images", "MSE", "sharpness (originals)", "sharpness (reconstructions)", "sharpness ratio"],
                  [[res["n_images"], pm(res["mse"]), pm(res["sharpness_original"]),
                    pm(res["sharpness_reconstruction"]), round(res["sharpness_ratio"], 3)]],
                  caption="Per-image pixel-wise MSE and variance of the Laplacian, mean ± std over images, "
                          "intensities in [0, 1] (paper 002, Sec. 3.3)")
    note = Text(f"Reconstructions G(E(x)) of the first real images ({res['code']} for VAEs, eval mode). Paper 002 "
                "reports MSE 0.004 ± 0.02 (VAE) and 0.008 ± 0.03 (DFC-VAE, IntroVAE); reconstructions keep 23% "
                "(VAE), 48% (DFC-VAE) and 82% (IntroVAE) of the originals' sharpness.")
    return [table, Figure(res["figure"], caption="Originals (left) and reconstructions (right), paper 002 Fig. 3"),
            note], res
