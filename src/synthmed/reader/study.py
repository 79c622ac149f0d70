"""A reader study on disk: ``synthmed reader create`` writes it, ``serve`` and ``analyze`` read it.

Layout of a study folder::

    study.json      settings, display layout, item ids (in images.npy row order), each reader's
                    presentation order, where the images came from (no per-item truth) and the
                    trivial statistics that tell the sources apart (``visible_differences``)
    access.json     the secret per-reader tokens and the admin token (mode 0600)
    images.npy      uint8 (N, *spatial): every image already windowed to 8-bit grey (3D: in RAS
                    voxel order, reoriented with the prepared dataset's affine)
    images_png.bin  every image's PNGs (one per plane), compressed and padded to one common byte
    images_png.json length, rendered once (see :mod:`synthmed.reader.pngcache`)
    truth.csv       item -> source (real / synthetic), source folder, row, subject id or seed
    answers.sqlite  the readers' answers (SQLite, WAL), one row per (reader, item), and when each
                    image's page was first sent; answers.sqlite-wal may hold committed answers too,
                    so copy the folder, not the database alone

The web app reads ``study.json``, ``access.json``, ``images.npy`` and the PNG cache only;
``truth.csv`` is read by the analysis alone, so no request can reveal which image is which.

Blinding: item ids are random (``secrets``), the row order of ``images.npy`` and each reader's
presentation order are drawn from the operating system's random source, not from ``--seed``
(the seed only chooses *which* images enter the study, so the subset is reproducible while
knowing the seed reveals nothing about the order).
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import logging
import math
import os
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from synthmed import __version__
from synthmed.errors import DataError
from synthmed.io_utils import atomic_dir, atomic_path, write_json_atomic
from synthmed.reader.pngcache import size_summary, write_png_cache
from synthmed.reader.render import (
    CONVENTION_TEXT,
    DISPLAY_CONVENTION,
    PlaneLayout,
    plane_layouts,
    ras_reorientation,
    to_ras,
    window_uint8,
)

log = logging.getLogger(__name__)

FORMAT = "synthmed-reader-study"
FORMAT_VERSION = 1
STUDY_JSON = "study.json"
ACCESS_JSON = "access.json"
IMAGES_NPY = "images.npy"
TRUTH_CSV = "truth.csv"
ANSWERS_DB = "answers.sqlite"
TRUTH_COLUMNS = ["item", "source", "source_name", "source_index", "source_id", "label", "source_path"]
#: item ids and tokens are URL-safe base64 from ``secrets.token_urlsafe``.
ITEM_ID_RE = re.compile(r"^[A-Za-z0-9_-]{16}$")
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{32}$")
READER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")
CONFIDENCE_LEVELS = (1, 2, 3, 4, 5)


@dataclass
class Study:
    """A loaded study, as the web app sees it (no ground truth).

    Attributes:
        root: the study folder.
        meta: the content of ``study.json``.
        images: (N, *spatial) uint8, memory-mapped, row ``i`` is item ``items[i]``.
        items: item ids in ``images`` row order.
        readers: reader names in creation order.
        orders: reader name -> item ids in that reader's presentation order.
        reader_tokens: secret token -> reader name.
        admin_token: the secret admin token.
        layouts: display layout of each plane.
    """

    root: Path
    meta: dict[str, Any]
    images: np.ndarray
    items: list[str]
    readers: list[str]
    orders: dict[str, list[str]]
    reader_tokens: dict[str, str]
    admin_token: str
    layouts: list[PlaneLayout]
    _row: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._row = {item: i for i, item in enumerate(self.items)}

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def spatial_dims(self) -> int:
        return int(self.meta["spatial_dims"])

    @property
    def db_path(self) -> Path:
        return self.root / ANSWERS_DB

    def has_item(self, item: str) -> bool:
        return item in self._row

    def image(self, item: str) -> np.ndarray:
        """The windowed uint8 image of ``item`` (KeyError when unknown)."""
        return np.asarray(self.images[self._row[item]])

    def layout(self, plane: str) -> PlaneLayout:
        """The layout of ``plane`` (KeyError when the study has no such plane)."""
        for lay in self.layouts:
            if lay.name == plane:
                return lay
        raise KeyError(plane)

    def token_of(self, reader: str) -> str:
        for tok, name in self.reader_tokens.items():
            if name == reader:
                return tok
        raise KeyError(reader)


# ---------------------------------------------------------------------------------------------
# creation


@dataclass
class _Source:
    name: str
    kind: str  # "real" | "synthetic"
    images: np.ndarray  # (n, 1, *spatial) float in [-1, 1]
    rows: list[int]
    ids: list[str]
    labels: list[str]
    path: str
    provenance: dict[str, Any]
    affine: Any = None  # the voxel grid's affine where the folder records it (sample.json, a run's data.json)


def _recorded_affine(path: Path) -> Any:
    """The affine a sampled folder (``sample.json``) or run folder (``data.json``) records, else None."""
    for name in ("sample.json", "data.json"):
        try:
            return json.loads((path / name).read_text(encoding="utf-8")).get("affine")
        except (OSError, ValueError, AttributeError):
            continue
    return None


def _reader_names(readers: int | Sequence[str]) -> list[str]:
    if isinstance(readers, int):
        if readers < 1:
            raise DataError(f"--readers must be at least 1, got {readers}")
        return [f"reader-{i + 1}" for i in range(readers)]
    names = [str(r) for r in readers]
    if not names:
        raise DataError("at least one reader name is needed")
    bad = [n for n in names if not READER_NAME_RE.match(n)]
    if bad:
        raise DataError(f"reader names {bad} are invalid; use 1-40 letters, digits, '.', '_' or '-'")
    if len(set(names)) != len(names):
        raise DataError(f"reader names must be unique, got {names}")
    return names


def _choose(rng: np.random.Generator, pool: np.ndarray, n: int, what: str, hint: str = "") -> np.ndarray:
    if n < 1:
        raise DataError(f"{what}: the number of images must be at least 1, got {n}")
    if n > len(pool):
        raise DataError(f"{what}: {n} images requested but only {len(pool)} available{hint}")
    return np.sort(rng.choice(pool, size=n, replace=False))


def _load_real(path: Path, n: int, split: str, fold: int, rng: np.random.Generator) -> tuple[_Source, dict]:
    from synthmed.data.prepared import load_prepared

    ds = load_prepared(path)
    risky = "images the model may have been trained on"
    try:
        pool = ds.indices(split, fold)
    except DataError as e:
        raise DataError(f"{e}; pass --split all to draw from every image ({risky})" if split == "test" else str(e)) \
            from None
    hint = f"; lower --n-real, or pass --split trainval or all ({risky})" if split == "test" else ""
    rows = _choose(rng, pool, n, f"{path} (split {split!r})", hint)
    images = np.asarray(ds.images[rows], dtype=np.float32)
    labels = [ds.records[i].label_name for i in rows]
    prov = {"path": str(path.resolve()), "split": split, "fold": fold, "n_available": int(len(pool)),
            "images_sha256": ds.meta.get("images_sha256"), "shape": list(ds.shape)}
    src = _Source("real", "real", images, [int(i) for i in rows], [ds.records[i].subject_id for i in rows],
                  labels, str(path.resolve()), prov)
    return src, ds.meta


def _synthetic_ids(path: Path, n_total: int, prov: dict[str, Any]) -> list[str]:
    """A traceable id per synthetic image: the manifest's file name, else the seed."""
    manifest = path / "manifest.csv"
    if manifest.is_file():
        with open(manifest, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        if len(rows) == n_total:
            return [r.get("file", "") or str(i) for i, r in enumerate(rows)]
    seeds = prov.get("seeds") or []
    if len(seeds) == n_total:
        return [f"seed={s}" for s in seeds]
    return [str(i) for i in range(n_total)]


def _load_synthetic(path: Path, name: str, n: int, seed: int, device: str,
                    rng: np.random.Generator) -> _Source:
    from synthmed.evaluate.synthetic import load_synthetic

    syn = load_synthetic(path, n, seed=seed, device=device)
    rows = _choose(rng, np.arange(len(syn.images)), n, str(path))
    ids = _synthetic_ids(path, len(syn.images), syn.provenance)
    labels = [str(int(syn.labels[i])) if syn.labels is not None else "" for i in rows]
    prov = {k: v for k, v in syn.provenance.items() if k != "seeds"}
    prov.update(name=name, n_available=int(len(syn.images)))
    return _Source(name, "synthetic", np.asarray(syn.images[rows], dtype=np.float32), [int(i) for i in rows],
                   [ids[i] for i in rows], labels, str(path.resolve()), prov, _recorded_affine(path))


def _unique_names(paths: Sequence[Path]) -> list[str]:
    names: list[str] = []
    for p in paths:
        base = p.resolve().name or "synthetic"
        name, k = base, 2
        while name in names or name == "real":
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


def _check_shapes(sources: list[_Source]) -> tuple[int, ...]:
    ref = sources[0]
    shape = tuple(ref.images.shape[2:])
    if len(shape) not in (2, 3):
        raise DataError(f"{ref.path}: images must be 2D or 3D, got spatial shape {shape}")
    for s in sources[1:]:
        if tuple(s.images.shape[2:]) != shape:
            raise DataError(f"{s.path}: synthetic images have shape {tuple(s.images.shape[2:])} but the real images "
                            f"in {ref.path} have {shape}; sample at the prepared dataset's size so both look alike")
    return shape


# ---------------------------------------------------------------------------------------------
# differences a reader can see at a glance

#: per-image statistics of the rendered (windowed, 8-bit) images, compared between the real
#: images and each synthetic source by :func:`visible_differences`
GLANCE_STATISTICS = {
    "black_fraction": "fraction of pure-black pixels, at or below the window's low end: the background",
    "white_fraction": "fraction of pure-white pixels, at or above the window's high end",
    "mean_grey": "mean grey level, 0 black to 1 white",
}
GLANCE_MIN_KS = 0.8
GLANCE_MIN_GAP = 0.05
GLANCE_RULE = (f"a statistic is reported when a single threshold on it alone sorts the real from the synthetic images "
               f"with a balanced accuracy of at least {(1 + GLANCE_MIN_KS) / 2:.0%} (two-sample Kolmogorov-Smirnov "
               f"D >= {GLANCE_MIN_KS}, since the best threshold's balanced accuracy is (1 + D) / 2; D = 1 when the two "
               f"ranges do not overlap) and the two medians differ by at least {GLANCE_MIN_GAP}")


def glance_statistics(pixels: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image :data:`GLANCE_STATISTICS` of rendered uint8 images (N, *spatial)."""
    flat = np.asarray(pixels).reshape(len(pixels), -1)
    return {"black_fraction": (flat == 0).mean(axis=1), "white_fraction": (flat == 255).mean(axis=1),
            "mean_grey": flat.mean(axis=1) / 255.0}


def _summary(x: np.ndarray) -> dict[str, float]:
    return {"min": round(float(x.min()), 4), "median": round(float(np.median(x)), 4), "max": round(float(x.max()), 4)}


def visible_differences(real: np.ndarray, synthetic: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Trivial statistics that tell the real images from a synthetic source (see :data:`GLANCE_RULE`).

    Args:
        real: rendered real images, uint8 (N, *spatial).
        synthetic: source name -> its rendered images.

    Returns:
        One dict per finding: ``source``, ``statistic``, ``description``, ``real`` and
        ``synthetic`` (min, median, max), ``ks`` (D) and ``balanced_accuracy`` ((1 + D) / 2).
    """
    from scipy.stats import ks_2samp

    ref = glance_statistics(real)
    findings = []
    for name, px in synthetic.items():
        other = glance_statistics(px)
        for key, description in GLANCE_STATISTICS.items():
            a, b = ref[key], other[key]
            d = float(ks_2samp(a, b).statistic)
            if d >= GLANCE_MIN_KS and abs(float(np.median(a)) - float(np.median(b))) >= GLANCE_MIN_GAP:
                findings.append({"source": name, "statistic": key, "description": description, "real": _summary(a),
                                 "synthetic": _summary(b), "ks": round(d, 4), "balanced_accuracy": round((1 + d) / 2, 4)})
    return findings


def _finding_line(f: dict[str, Any]) -> str:
    r, s = f["real"], f["synthetic"]
    return (f"real and synthetic images differ at a glance: {f['statistic']} is {r['min']:.3f}-{r['max']:.3f} "
            f"(median {r['median']:.3f}) in the real images, {s['min']:.3f}-{s['max']:.3f} (median {s['median']:.3f}) "
            f"in {f['source']!r}; a threshold on it alone sorts them with balanced accuracy "
            f"{f['balanced_accuracy']:.0%}, so readers need not judge realism ({f['description']})")


def _check_window(window: Sequence[float]) -> tuple[float, float]:
    if len(window) != 2:
        raise DataError(f"--window LOW HIGH needs two values, got {list(window)}")
    lo, hi = float(window[0]), float(window[1])
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise DataError(f"--window LOW HIGH needs finite LOW < HIGH, got {lo:g} {hi:g}")
    return lo, hi


def create_study(real: str | os.PathLike[str], synthetic: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
                 out: str | os.PathLike[str], *, n_real: int = 50, n_synthetic: int = 50,
                 readers: int | Sequence[str] = 3, split: str = "test", fold: int = 0, seed: int = 0,
                 window: tuple[float, float] = (-1.0, 1.0), device: str = "auto") -> Path:
    """Write a blinded real-versus-synthetic reader study folder.

    Args:
        real: a prepared dataset folder (``synthmed preprocess``).
        synthetic: one or more folders written by ``synthmed sample`` or run folders (sampled
            on the fly with seeds ``seed .. seed + n_synthetic - 1``).
        out: the study folder to create (must not exist or be empty).
        n_real: real images drawn at random from ``split`` of ``real``.
        n_synthetic: images drawn at random from each synthetic folder.
        readers: number of readers (named ``reader-1`` ...) or their names.
        split: subset of the prepared dataset (``test``, the held-out subjects, by default; ``all``,
            ``trainval``, ``train`` and ``val`` include images a model may have been trained on).
        fold: fold for ``train`` / ``val``.
        seed: chooses which images enter the study (not their order).
        window: intensity window mapped to black..white, identical for both sources.
        device: device for sampling run folders.

    Returns:
        The study folder.  Trivial statistics that tell the sources apart (see
        :func:`visible_differences`) are logged as warnings, one line each, and recorded under
        ``visible_differences`` in ``study.json``.

    Raises:
        DataError: a bad argument (checked before any image is loaded) or unusable inputs.
    """
    window = _check_window(window)
    out_path = Path(out)
    if out_path.exists() and (not out_path.is_dir() or any(out_path.iterdir())):
        raise DataError(f"{out_path}: already exists and is not empty; choose a new study folder")
    names = _reader_names(readers)
    syn_paths = [Path(synthetic)] if isinstance(synthetic, (str, os.PathLike)) else [Path(p) for p in synthetic]
    if not syn_paths:
        raise DataError("at least one --synthetic folder is needed")
    rng = np.random.default_rng(seed)
    real_src, real_meta = _load_real(Path(real), n_real, split, fold, rng)
    sources = [real_src] + [_load_synthetic(p, nm, n_synthetic, seed, device, rng)
                            for p, nm in zip(syn_paths, _unique_names(syn_paths), strict=True)]
    shape = _check_shapes(sources)
    spacing = real_meta.get("spacing")
    orientation: dict[str, Any]
    if len(shape) == 3:
        shape, spacing, orientation = _reorient(sources, real_meta, shape, spacing)
    else:
        orientation = {"display": "as stored: rows top to bottom, columns left to right"}
    layouts = plane_layouts(shape, spacing)

    sysrand = secrets.SystemRandom()
    entries = [(s, j) for s in sources for j in range(len(s.rows))]
    sysrand.shuffle(entries)  # row order of images.npy carries no information
    items: list[str] = []
    while len(items) < len(entries):
        tok = secrets.token_urlsafe(12)
        if tok not in items:
            items.append(tok)
    pixels = np.stack([window_uint8(s.images[j:j + 1], *window)[0] for s, j in entries])
    kinds = np.array([s.name for s, _ in entries])
    findings = visible_differences(pixels[kinds == "real"], {s.name: pixels[kinds == s.name] for s in sources[1:]})
    for f in findings:
        log.warning("%s", _finding_line(f))
    truth = [{"item": it, "source": s.kind, "source_name": s.name, "source_index": s.rows[j], "source_id": s.ids[j],
              "label": s.labels[j], "source_path": s.path} for it, (s, j) in zip(items, entries, strict=True)]
    tokens = {nm: secrets.token_urlsafe(24) for nm in names}
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "synthmed_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "spatial_dims": len(shape), "shape": list(shape), "spacing": spacing, "orientation": orientation,
        "window": [float(w) for w in window],
        "n_items": len(items), "n_real": len(real_src.rows), "n_synthetic": sum(len(s.rows) for s in sources[1:]),
        "selection_seed": int(seed), "confidence_levels": list(CONFIDENCE_LEVELS),
        "planes": [lay.to_dict() for lay in layouts], "items": items,
        "readers": [{"name": nm, "order": sysrand.sample(items, len(items))} for nm in names],
        "sources": {"real": real_src.provenance, "synthetic": [s.provenance for s in sources[1:]]},
        "visible_differences": {"statistics": GLANCE_STATISTICS, "rule": GLANCE_RULE, "findings": findings},
    }
    _write_folder(out_path, pixels, meta, truth, {"admin_token": secrets.token_urlsafe(24), "readers": tokens})
    return out_path


def _reorient(sources: list[_Source], real_meta: dict[str, Any], shape: tuple[int, ...],
              spacing: Sequence[float] | None) -> tuple[tuple[int, ...], list[float] | None, dict[str, Any]]:
    """Bring every 3D source into RAS voxel order with the prepared dataset's affine (synthetic
    images share the prepared grid they were trained on); returns the RAS shape and spacing and
    the ``orientation`` record of ``study.json``."""
    perm, flip, codes = ras_reorientation(real_meta.get("affine"))
    if real_meta.get("affine") is None:
        log.warning("the prepared dataset has no affine; its volumes are taken to be in RAS voxel order")
    for s in sources[1:]:
        other = ras_reorientation(s.affine)[2] if s.affine is not None else None
        if other is not None and other != codes:
            log.warning("%s: the synthetic images' grid is oriented %s but the real images' %s; both are shown as "
                        "if oriented %s", s.path, other, codes, codes)
    for s in sources:
        s.images = to_ras(s.images, perm, flip)
    new_shape = tuple(shape[p] for p in perm)
    new_spacing = [float(spacing[p]) for p in perm] if spacing is not None and len(spacing) == 3 else spacing
    return new_shape, new_spacing, {"source_axcodes": codes, "voxel_order": "RAS", "display": DISPLAY_CONVENTION,
                                    "description": CONVENTION_TEXT}


def _write_folder(out: Path, pixels: np.ndarray, meta: dict[str, Any], truth: list[dict[str, Any]],
                  access: dict[str, Any]) -> None:
    """Write everything into a temporary sibling folder, then rename it into place."""
    from synthmed.reader.store import AnswerStore

    with atomic_dir(out) as tmp:  # an existing (empty, checked by the caller) folder is replaced
        np.save(tmp / IMAGES_NPY, pixels)
        info = write_png_cache(tmp, pixels, meta["items"], [PlaneLayout(**p) for p in meta["planes"]])
        log.info("rendered %s", size_summary(info))
        with open(tmp / TRUTH_CSV, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=TRUTH_COLUMNS)
            w.writeheader()
            w.writerows(truth)
        write_json_atomic(tmp / ACCESS_JSON, access)
        os.chmod(tmp / ACCESS_JSON, 0o600)
        AnswerStore(tmp / ANSWERS_DB).close()
        write_json_atomic(tmp / STUDY_JSON, meta)
        os.chmod(tmp, 0o755)


# ---------------------------------------------------------------------------------------------
# loading


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(f"{path}: missing; {path.parent} is not a reader study (run `synthmed reader create`)")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: corrupt JSON ({e})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a JSON object")
    return obj


def _check_meta(meta: dict[str, Any], path: Path) -> None:
    if meta.get("format") != FORMAT:
        raise DataError(f"{path}: not a reader study file (format {meta.get('format')!r}, expected {FORMAT!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise DataError(f"{path}: format_version {meta.get('format_version')!r} is not supported "
                        f"(expected {FORMAT_VERSION})")
    for key in ("spatial_dims", "shape", "items", "readers", "planes"):
        if key not in meta:
            raise DataError(f"{path}: key {key!r} is missing")
    items = meta["items"]
    if not all(isinstance(i, str) and ITEM_ID_RE.match(i) for i in items) or len(set(items)) != len(items):
        raise DataError(f"{path}: key 'items' must list unique item ids")
    for r in meta["readers"]:
        if not isinstance(r, dict) or not READER_NAME_RE.match(str(r.get("name", ""))):
            raise DataError(f"{path}: key 'readers' has an entry without a valid name: {r!r}")
        if sorted(r.get("order", [])) != sorted(items):
            raise DataError(f"{path}: readers[{r['name']!r}].order is not a permutation of 'items'")


def read_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The validated ``study.json`` of a study folder."""
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root}: reader study folder does not exist (run `synthmed reader create`)")
    meta = _read_json(root / STUDY_JSON)
    _check_meta(meta, root / STUDY_JSON)
    return meta


def load_study(path: str | os.PathLike[str]) -> Study:
    """Load and validate a study folder (everything except the ground truth)."""
    root = Path(path)
    meta = read_meta(root)
    access = _read_json(root / ACCESS_JSON)
    names = [r["name"] for r in meta["readers"]]
    tokens = access.get("readers")
    admin = access.get("admin_token")
    if not isinstance(tokens, dict) or sorted(tokens) != sorted(names):
        raise DataError(f"{root / ACCESS_JSON}: key 'readers' must map every reader of study.json to a token")
    all_tokens = [*tokens.values(), admin]
    if not all(isinstance(t, str) and TOKEN_RE.match(t) for t in all_tokens) or len(set(all_tokens)) != len(all_tokens):
        raise DataError(f"{root / ACCESS_JSON}: tokens must be unique 32-character URL-safe strings")
    try:
        images = np.load(root / IMAGES_NPY, mmap_mode="r")
    except (OSError, ValueError) as e:
        raise DataError(f"{root / IMAGES_NPY}: cannot read study images ({e})") from None
    if images.dtype != np.uint8 or images.shape != (len(meta["items"]), *meta["shape"]):
        raise DataError(f"{root / IMAGES_NPY}: expected uint8 {(len(meta['items']), *meta['shape'])}, "
                        f"got {images.dtype} {images.shape}")
    try:
        layouts = [PlaneLayout(**p) for p in meta["planes"]]
    except TypeError as e:
        raise DataError(f"{root / STUDY_JSON}: key 'planes' is malformed ({e})") from None
    return Study(root=root, meta=meta, images=images, items=list(meta["items"]), readers=names,
                 orders={r["name"]: list(r["order"]) for r in meta["readers"]},
                 reader_tokens={t: n for n, t in tokens.items()}, admin_token=admin, layouts=layouts)


def load_truth(path: str | os.PathLike[str]) -> dict[str, dict[str, str]]:
    """The ground truth of a study: item id -> its ``truth.csv`` row."""
    p = Path(path) / TRUTH_CSV
    if not p.is_file():
        raise DataError(f"{p}: missing; the study's ground truth is needed for the analysis")
    try:
        with open(p, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, csv.Error) as e:
        raise DataError(f"{p}: cannot read ({e})") from None
    if not rows or any(k not in rows[0] for k in ("item", "source", "source_name")):
        raise DataError(f"{p}: expected columns {TRUTH_COLUMNS}")
    bad = [r["item"] for r in rows if r["source"] not in ("real", "synthetic")]
    if bad:
        raise DataError(f"{p}: column 'source' must be 'real' or 'synthetic' (items {bad[:3]})")
    return {r["item"]: r for r in rows}


def write_csv(path: Path, columns: Sequence[str], rows: Sequence[Sequence[Any]] | Sequence[dict[str, Any]]) -> Path:
    """Write a CSV file atomically (rows as sequences or dicts)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            if rows and isinstance(rows[0], dict):
                w = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
                w.writeheader()
                w.writerows(rows)  # type: ignore[arg-type]
            else:
                wr = csv.writer(f)
                wr.writerow(columns)
                wr.writerows(rows)  # type: ignore[arg-type]
    return path
