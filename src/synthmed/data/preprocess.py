"""``synthmed preprocess``: raw cohort -> prepared folder (``prepared.py`` format).

3D pipeline (paper 000, "Data": images "registered to MNI space", intensities "capped at upper and
lower 1% quantile" and "rescaled to the range of -1 to 1", "slices containing only background were
trimmed", then 64^3 voxels at about 2 mm):

1. reorient to RAS (nibabel ``as_closest_canonical``);
2. resample to ``spacing`` mm (SimpleITK, Gaussian anti-aliasing when downsampling);
3. ``register=True``: affine registration to the brain-masked MNI152 template at ``spacing`` mm
   (``registration.py``) and resampling onto the template grid, then (``brain_mask``) voxels
   outside the template brain mask grown by 4 mm become background.  ``register=False``: resampling
   onto one common RAS grid covering every subject's field of view (for already aligned data);
4. per subject, clip at the ``clip_quantiles`` of the *foreground* voxels and rescale to [-1, 1],
   background -> -1.  Foreground = voxels above the volume minimum by more than 0.1% of its robust
   range (minimum to 99.9th percentile).
   Quantiles are taken over the foreground because skull-stripped volumes are mostly zeros: over
   all voxels the 1% quantile is 0 and the 99% quantile falls inside the brain's intensity range;
5. trim background-only slices with one cohort-wide box (union of all foregrounds, so subjects
   stay aligned); ``isotropic=True`` enlarges the box to a cube so voxels stay isotropic;
6. resize to ``size`` per axis (cubic B-spline, MONAI), clip to [-1, 1].  As in the paper the
   trimmed box is resized to ``size``^3, so by default the final voxels are slightly anisotropic
   (ds002748 at 64^3: about 2.4 x 3.0 x 2.5 mm); ``dataset.json`` records the exact spacing.

The ``affine`` written to ``dataset.json`` is the true voxel-to-world (RAS, mm) affine of the final
grid: grid affine @ crop offset @ resize scaling.  2D images: grayscale, resize to size x size
(bicubic, antialiased, torch), clip at the quantiles of all pixels, rescale to [-1, 1].  MedMNIST:
uint8 -> [-1, 1] (x / 127.5 - 1), resized when ``size`` differs from the native size.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from synthmed.data.prepared import Record, write_prepared
from synthmed.data.readers import RawSubject, detect_reader, natural_key
from synthmed.data.registration import (
    RegistrationSettings,
    array_to_sitk,
    canonical,
    cohort_box,
    common_grid,
    crop_box,
    crop_resize_affine,
    register_affine,
    resample_onto,
    resample_to_spacing,
    resize_images,
    resize_volumes,
    smooth_for_spacing,
    transform_matrix,
)
from synthmed.data.splits import make_splits
from synthmed.data.template import Template, load_template
from synthmed.errors import ConfigError, DataError
from synthmed.io_utils import atomic_dir, folder_lock
from synthmed.progress import progress as progress_bar
from synthmed.registry import READERS

log = logging.getLogger(__name__)
GEOMETRIC_READERS = ("nifti", "bids", "dicom")
#: largest output grid side of 3D data (every reader): 256^3 float32 is 64 MiB per volume
MAX_3D_SIZE = 256
#: fewest voxels per axis the 3D pipeline handles (SimpleITK's recursive Gaussian needs 4)
MIN_VOXELS = 4


@dataclass
class PreprocessOptions:
    """Everything ``run_preprocess`` needs (recorded in ``dataset.json``).

    Attributes:
        input: input folder or file.  out: prepared folder to write (absent, empty or an older
            prepared folder, which is replaced atomically).
        reader: a READERS name or ``auto``.
        labels_csv, id_column, label_column: label table (nifti/dicom) and its columns; for BIDS
            ``label_column`` names a participants.tsv column.  ``label_column=None``: unlabelled.
        size: output grid side (3D: 32..256, 2D: 8..1024); None keeps MedMNIST/2D native size.
        spacing: 3D working resolution in mm (template grid / common grid).
        register: affinely register 3D volumes with geometry (nifti/bids/dicom) to ``template``.
        brain_mask: with ``register``, set voxels outside the template brain mask grown by
            ``mask_dilation_mm`` to background (removes neck/eye remnants of skull stripping so
            the cohort box fits the brain).
        clip_quantiles: lower/upper intensity quantiles (over foreground voxels in 3D).
        trim_background: crop background-only slices (one cohort-wide box).
        isotropic: make the crop box cubic (padding with background) so the final voxels stay
            isotropic (3D); False (default, as in paper 000) fills the grid with the trimmed box.
        margin: background voxels kept around the cohort box.
        n_folds, test_fraction, seed: see ``splits.make_splits``.
        workers: processes for the per-subject 3D steps (1 = in this process).  Workers are
            spawned, so scripts must call ``run_preprocess`` under ``if __name__ == "__main__":``.
            Registration is seeded: reruns with the same thread count give the same result.
        progress: show a tqdm progress bar.
        registration: SimpleITK registration settings.
        allow_missing_slices: DICOM series with unreadable files, slices without a position or
            non-uniform slice spacing (a missing slice) are resampled onto a uniform grid instead of
            refused; what was done is recorded per subject in ``manifest.csv`` (``note``) and
            ``dataset.json`` (``preprocessing.slice_repairs``).
    """

    input: Path
    out: Path
    reader: str = "auto"
    labels_csv: Path | None = None
    id_column: str = "subject_id"
    label_column: str | None = "label"
    size: int | None = 64
    spacing: float = 2.0
    register: bool = True
    template: str = "mni152"
    brain_mask: bool = True
    mask_dilation_mm: float = 4.0
    clip_quantiles: tuple[float, float] = (0.01, 0.99)
    trim_background: bool = True
    isotropic: bool = False
    margin: int = 1
    n_folds: int = 5
    test_fraction: float = 0.2
    seed: int = 0
    workers: int = 1
    progress: bool = True
    registration: RegistrationSettings = field(default_factory=RegistrationSettings)
    allow_missing_slices: bool = False

    def validate(self) -> None:
        """Raise ConfigError for out-of-range options."""
        lo, hi = self.clip_quantiles
        checks = [
            (self.size is None or 8 <= int(self.size) <= 1024, f"size must be 8..1024, got {self.size}"),
            (0.5 <= float(self.spacing) <= 8.0, f"spacing must be 0.5..8 mm, got {self.spacing}"),
            (0.0 <= lo < hi <= 1.0, f"clip_quantiles must satisfy 0 <= low < high <= 1, got {self.clip_quantiles}"),
            (self.n_folds >= 2, f"n_folds must be >= 2, got {self.n_folds}"),
            (0.0 <= self.test_fraction < 1.0, f"test_fraction must be in [0, 1), got {self.test_fraction}"),
            (self.workers >= 1 and self.margin >= 0, "workers must be >= 1 and margin >= 0"),
            (self.reader in READERS, f"unknown reader {self.reader!r}; expected one of: {', '.join(READERS.names())}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(input=str(self.input), out=str(self.out), registration=self.registration.to_dict(),
                 labels_csv=None if self.labels_csv is None else str(self.labels_csv),
                 clip_quantiles=list(self.clip_quantiles))
        return d


# ------------------------------------------------------------------------------ intensities
def foreground_mask(vol: np.ndarray) -> np.ndarray:
    """Voxels above the volume's minimum (background) by more than 0.1% of its robust range.

    The range is measured up to the 99.9th percentile so that a few hot voxels cannot push the
    threshold into the tissue intensities.
    """
    lo = float(vol.min())
    hi = float(np.percentile(vol, 99.9))
    return vol > lo + 1e-3 * max(hi - lo, 0.0)


def clip_and_rescale(vol: np.ndarray, quantiles: tuple[float, float] = (0.01, 0.99),
                     mask: np.ndarray | None = None, name: str = "image") -> np.ndarray:
    """Clip at intensity quantiles of ``mask`` voxels and rescale to [-1, 1] (paper 000, "Data").

    Args:
        vol: array of any shape.
        quantiles: (low, high) quantiles, e.g. (0.01, 0.99).
        mask: voxels the quantiles are computed over and that keep their value; everything else
            becomes -1 (background).  None: all voxels.
        name: used in error messages.

    Returns:
        float32 array of ``vol``'s shape in [-1, 1]; the low quantile maps to -1, the high to 1.
    """
    m = np.ones(vol.shape, dtype=bool) if mask is None else mask
    if not m.any():
        raise DataError(f"{name}: image is empty (no foreground voxels)")
    q_lo, q_hi = np.quantile(vol[m], quantiles)
    if not q_hi > q_lo:
        raise DataError(f"{name}: no intensity contrast (the {quantiles} quantiles are both {q_lo:g})")
    out = (np.clip(vol, q_lo, q_hi) - q_lo) * (2.0 / (q_hi - q_lo)) - 1.0
    return np.where(m, out, -1.0).astype(np.float32)


# ------------------------------------------------------------------------------ geometry
def align_to_template(array: np.ndarray, affine: np.ndarray, template: Template,
                      settings: RegistrationSettings,
                      mask_dilation_mm: float | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Register one RAS volume to ``template`` and resample it onto the template grid.

    The registration runs on a copy resampled to the template spacing; the final resampling goes
    from the (anti-aliased) original in one interpolation.

    Args:
        array: (X, Y, Z) float32 RAS volume.  affine: its 4x4 affine.
        template: target template.  settings: registration settings.
        mask_dilation_mm: if given, voxels outside the template brain mask grown by this many mm
            are set to the background value (the volume minimum).

    Returns:
        ``(volume on the template grid (template.shape), qc dict)``.
    """
    src = array_to_sitk(array, affine)
    moving = resample_to_spacing(src, template.spacing)
    res = register_affine(template.to_sitk(), moving, template.mask_sitk(), settings)
    out = resample_onto(smooth_for_spacing(src, template.spacing), template.affine, template.shape,
                        res.transform, sitk.sitkLinear, default=float(array.min()))
    if mask_dilation_mm is not None:
        out = np.where(template.dilated_mask(mask_dilation_mm), out, float(array.min())).astype(np.float32)
    m = template.mask
    corr = float(np.corrcoef(out[m], template.image[m])[0, 1]) if out[m].std() > 0 else 0.0
    qc = {"registration_seconds": round(res.seconds, 3), "mattes_mi": [round(v, 5) for v in res.metric],
          "template_correlation": round(corr, 4), "template_to_subject": transform_matrix(res.transform).tolist()}
    return out, qc


@dataclass
class _AlignJob:
    subject_id: str
    array: np.ndarray
    affine: np.ndarray
    spacing: float
    template: str | None
    settings: RegistrationSettings
    grid_affine: np.ndarray | None = None
    grid_shape: tuple[int, int, int] | None = None
    mask_dilation_mm: float | None = None


def _align_job(job: _AlignJob) -> tuple[np.ndarray, dict[str, Any]]:
    arr, aff = canonical(job.array, job.affine)
    if job.template is not None:
        return align_to_template(arr, aff, load_template(job.template, job.spacing), job.settings,
                                 job.mask_dilation_mm)
    assert job.grid_affine is not None and job.grid_shape is not None
    src = smooth_for_spacing(array_to_sitk(arr, aff), job.spacing)
    return resample_onto(src, job.grid_affine, job.grid_shape, default=float(arr.min())), {}


def check_registrable(s: RawSubject, spacing: float, register: bool) -> None:
    """Refuse, naming the file, a volume the 3D pipeline cannot handle (SimpleITK would fail deep inside
    registration or smoothing without naming it): fewer than :data:`MIN_VOXELS` voxels along an axis
    (a single slice), with ``register`` fewer than that at ``spacing`` mm, or one value everywhere.
    """
    shape = tuple(int(n) for n in s.array.shape)
    if min(shape) < MIN_VOXELS:
        what = "a single-slice volume" if min(shape) == 1 else f"a volume only {min(shape)} voxels thick"
        raise DataError(f"{s.source}: {what} (shape {shape}); 3D preprocessing needs at least {MIN_VOXELS} "
                        "voxels along every axis (is this a 2D image or a localizer?)")
    if register:
        extent = np.asarray(shape, dtype=np.float64) * np.asarray(s.spacing)
        thin = [k for k in range(3) if round(extent[k] / spacing) < MIN_VOXELS]
        if thin:
            k = thin[0]
            raise DataError(f"{s.source}: covers only {extent[k]:.3g} mm along axis {k} (shape {shape}, spacing "
                            f"{', '.join(f'{v:.3g}' for v in s.spacing)} mm), fewer than {MIN_VOXELS} voxels at "
                            f"{spacing:g} mm; registration needs more (or use --no-register)")
    lo, hi = float(np.min(s.array)), float(np.max(s.array))
    if lo == hi:
        what = "an all-zero volume" if hi == 0 else f"a constant volume (every voxel is {lo:g})"
        raise DataError(f"{s.source}: {what}; there is nothing to register or rescale (an empty or failed "
                        "export?)")


def _die_with_parent(parent: int, poll_s: float = 1.0) -> None:
    """Make this worker process end when ``parent`` (the process that started it) dies, even by kill -9:
    a worker waiting for its next job would otherwise block forever, holding its memory.

    On Linux the kernel sends SIGKILL on the parent's death (``prctl(PR_SET_PDEATHSIG)``); everywhere a
    daemon thread also checks every ``poll_s`` seconds whether the parent is still this process's parent
    (an orphan is adopted by another process) and ends the process if not.
    """
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG = 1
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="synthmed-parent-watchdog", daemon=True).start()


def _init_worker(threads: int, parent: int | None = None) -> None:
    if parent is not None:
        _die_with_parent(parent)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)


def _map(fn: Callable[[Any], Any], jobs: list[Any], workers: int, desc: str, progress: bool) -> Iterator[Any]:
    bar = dict(total=len(jobs), desc=desc, unit="subj", disable=not progress)
    if workers <= 1 or len(jobs) <= 1:
        yield from progress_bar(map(fn, jobs), **bar)
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    import multiprocessing as mp

    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                             initargs=(threads, os.getpid())) as ex:
        yield from progress_bar(ex.map(fn, jobs), **bar)


# ------------------------------------------------------------------------------ pipelines
def _prepare_3d(subjects: list[RawSubject], opts: PreprocessOptions) -> tuple[np.ndarray, dict[str, Any]]:
    if opts.size is not None and not 32 <= opts.size <= MAX_3D_SIZE:
        raise ConfigError(f"3D size must be 32..{MAX_3D_SIZE}, got {opts.size}")
    for s in subjects:  # before any registration: SimpleITK's errors would not name the file
        check_registrable(s, opts.spacing, opts.register)
    template = load_template(opts.template, opts.spacing) if opts.register else None
    if template is not None:
        grid_aff, grid_shape = template.affine, template.shape
    else:
        grid_aff, grid_shape = common_grid([(s.array.shape, s.affine) for s in subjects], opts.spacing)
    jobs = [_AlignJob(s.subject_id, s.array, s.affine, opts.spacing, template.name if template else None,
                      opts.registration, grid_aff, grid_shape,
                      opts.mask_dilation_mm if opts.brain_mask else None) for s in subjects]
    vols = np.empty((len(subjects), *grid_shape), dtype=np.float32)
    qc: dict[str, Any] = {}
    desc = "register" if template else "resample"
    for i, (vol, q) in enumerate(_map(_align_job, jobs, opts.workers, desc, opts.progress)):
        vols[i] = clip_and_rescale(vol, opts.clip_quantiles, foreground_mask(vol), subjects[i].source)
        if q:
            qc[subjects[i].subject_id] = q
            if q["template_correlation"] < 0.3:
                log.warning("%s: low correlation with the template after registration (%.2f); check it",
                            subjects[i].source, q["template_correlation"])
    start, box = cohort_box(vols, opts.trim_background, opts.margin, opts.isotropic)
    out_shape = [int(b) for b in box] if opts.size is None else [int(opts.size)] * 3
    vols = resize_volumes(crop_box(vols, start, box), out_shape)
    affine = crop_resize_affine(grid_aff, start, box, out_shape)
    meta: dict[str, Any] = {"spacing": np.linalg.norm(affine[:3, :3], axis=0).round(6).tolist(), "affine": affine}
    prep = {"grid": {"affine": np.asarray(grid_aff).tolist(), "shape": list(grid_shape),
                     "kind": "template" if template else "common RAS box"},
            "crop": {"start": start.tolist(), "size": box.tolist()},
            "foreground": "voxels above the volume minimum by > 0.1% of (99.9th percentile - minimum)",
            "quantiles_over": "foreground voxels", "resize": "cubic B-spline (MONAI Affine mode=3)"}
    if template is not None:
        prep["template"] = {"name": template.name, "file": template.path.name, "sha256": template.sha256,
                            "spacing": template.spacing, "shape": list(template.shape)}
        secs = [q["registration_seconds"] for q in qc.values()]
        prep["registration_seconds"] = {"mean": round(float(np.mean(secs)), 3), "max": round(float(np.max(secs)), 3)}
    return vols[:, None], {**meta, "preprocessing": prep, "qc": qc}


def _prepare_2d(subjects: list[RawSubject], opts: PreprocessOptions) -> tuple[np.ndarray, dict[str, Any]]:
    shapes = {s.array.shape for s in subjects}
    if opts.size is None and len(shapes) > 1:
        raise ConfigError(f"images have {len(shapes)} different sizes; choose an output size with --size")
    size = int(opts.size) if opts.size is not None else int(next(iter(shapes))[0])
    if opts.size is None and len({d for sh in shapes for d in sh}) > 1:
        raise ConfigError(f"images are not square {sorted(shapes)[0]}; choose an output size with --size")
    out = np.empty((len(subjects), 1, size, size), dtype=np.float32)
    for i, s in enumerate(progress_bar(subjects, desc="images", unit="img", disable=not opts.progress)):
        img = resize_images(np.asarray(s.array, dtype=np.float32)[None], size)[0]
        out[i, 0] = clip_and_rescale(img, opts.clip_quantiles, None, s.source)
    sp = [float(next(iter(shapes))[k]) / size for k in (0, 1)] if len(shapes) == 1 else [1.0, 1.0]
    affine = np.diag([sp[0], sp[1], 1.0, 1.0])
    affine[:2, 3] = (np.asarray(sp) - 1.0) / 2.0
    prep = {"resize": "bicubic, antialiased (torch)", "quantiles_over": "all pixels",
            "units": "source pixels" if len(shapes) == 1 else "prepared pixels (inputs differ in size)"}
    return out, {"spacing": sp, "affine": affine, "preprocessing": prep}


def _prepare_arrays(subjects: list[RawSubject], opts: PreprocessOptions) -> tuple[np.ndarray, dict[str, Any]]:
    """MedMNIST: uint8 -> [-1, 1]; resized (cubic) when ``size`` differs from the native size."""
    shapes = {s.array.shape for s in subjects}
    if len(shapes) != 1:
        raise DataError(f"{subjects[0].source.split(':')[0]}: images of different shapes {sorted(shapes)}")
    native = next(iter(shapes))
    d = len(native)
    if d == 3 and opts.size is not None and opts.size > MAX_3D_SIZE:  # the cap of every 3D reader
        raise ConfigError(f"3D size must be at most {MAX_3D_SIZE}, got {opts.size} ({len(subjects)} volumes of "
                          f"{opts.size}^3 would need {len(subjects) * opts.size ** 3 * 4 / 2 ** 30:.3g} GiB)")
    size = native if opts.size is None else (int(opts.size),) * d
    x = np.stack([s.array for s in subjects]).astype(np.float32) / 127.5 - 1.0
    if tuple(size) != tuple(native):
        x = resize_images(x, size[0]) if d == 2 else resize_volumes(x, size)
    affine = crop_resize_affine(np.eye(4), [0] * d, native, size)
    prep = {"intensity": "uint8 / 127.5 - 1", "units": "source voxels (MedMNIST has no physical spacing)",
            "resize": "none" if tuple(size) == tuple(native) else ("bicubic (torch)" if d == 2 else "cubic B-spline (MONAI)")}
    return np.clip(x, -1.0, 1.0)[:, None], {"spacing": np.diag(affine)[:d].tolist(), "affine": affine,
                                          "preprocessing": prep}


def _records(subjects: list[RawSubject]) -> tuple[list[Record], list[str]]:
    names = {s.label_name for s in subjects}
    if None in names and len(names) > 1:
        raise DataError("some subjects have labels and others do not")
    classes = [] if names == {None} else sorted((str(n) for n in names), key=natural_key)
    index = {c: i for i, c in enumerate(classes)}
    recs = [Record(s.subject_id, None if s.label_name is None else index[s.label_name], s.label_name or "",
                   s.source, s.source_sha256, s.note) for s in subjects]
    return recs, classes


# ------------------------------------------------------------------------------ entry point
def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "dataset.json").is_file())):
        raise DataError(f"{out}: output exists and is not a prepared dataset folder; choose another --out")


def _publish(out: Path, images: np.ndarray, records: list[Record], meta: dict[str, Any],
             splits: dict[str, Any]) -> Path:
    """Write into a temporary sibling folder, then rename it onto ``out`` (replacing an old one)."""
    _check_out(out)
    with atomic_dir(out) as tmp:
        write_prepared(tmp, images, records, meta, splits)
    return out


def read_subjects(opts: PreprocessOptions) -> tuple[str, list[RawSubject]]:
    """Run the chosen (or detected) reader; returns ``(reader name, subjects)``."""
    reader = detect_reader(opts.input) if opts.reader == "auto" else opts.reader
    subjects = READERS.get(reader)(opts.input, labels_csv=opts.labels_csv, id_column=opts.id_column,
                                   label_column=opts.label_column, allow_missing_slices=opts.allow_missing_slices)
    if not subjects:
        raise DataError(f"{opts.input}: no images found")
    ids = [s.subject_id for s in subjects]
    if len(set(ids)) != len(ids):
        raise DataError(f"{opts.input}: duplicate subject ids (e.g. {sorted(i for i in ids if ids.count(i) > 1)[0]})")
    dims = {s.spatial_dims for s in subjects}
    if len(dims) != 1:
        raise DataError(f"{opts.input}: mixes 2D and 3D images")
    return reader, subjects


def run_preprocess(opts: PreprocessOptions) -> Path:
    """Read, preprocess and write a prepared dataset folder (nothing is written on error).

    Args:
        opts: see :class:`PreprocessOptions`.

    Returns:
        The prepared folder ``opts.out`` (load it with ``prepared.load_prepared``).
    """
    opts.validate()
    out = Path(opts.out)
    with folder_lock(out, beside=True):  # one writer per output folder; removes a killed run's .NAME.*.tmp
        return _run_preprocess(opts, out)


def _run_preprocess(opts: PreprocessOptions, out: Path) -> Path:
    _check_out(out)
    t0 = time.perf_counter()
    reader, subjects = read_subjects(opts)
    t_read = time.perf_counter() - t0
    if reader == "medmnist":
        images, meta = _prepare_arrays(subjects, opts)
    elif subjects[0].spatial_dims == 2:
        images, meta = _prepare_2d(subjects, opts)
    else:
        if reader not in GEOMETRIC_READERS and opts.register:
            raise ConfigError(f"reader {reader!r} has no world geometry; use register=False")
        images, meta = _prepare_3d(subjects, opts)
    t_prep = time.perf_counter() - t0 - t_read
    records, classes = _records(subjects)
    fixed = [s.subject_id for s in subjects if s.split == "test"] or None
    labels = None if not classes else [r.label for r in records]
    splits = make_splits([r.subject_id for r in records], labels, opts.n_folds, opts.test_fraction, opts.seed,
                         fixed_test=fixed)
    steps = meta["preprocessing"]
    repairs = {s.subject_id: s.note for s in subjects if s.note}
    if repairs:
        steps["slice_repairs"] = repairs
    meta["preprocessing"] = {"reader": reader, "options": opts.to_dict(), **steps,
                             "reference": "paper 000, Methods/Data (MNI registration, 1%/99% clipping, "
                                          "[-1, 1], background trimming, 64^3)"}
    meta.update(classes=classes, orientation="RAS" if images.ndim == 5 else "image rows/cols")
    _publish(out, images, records, meta, splits)
    log.info("prepared %d images of shape %s into %s (read %.1f s, preprocess %.1f s, total %.1f s)",
             len(records), images.shape[2:], out, t_read, t_prep, time.perf_counter() - t0)
    return out
