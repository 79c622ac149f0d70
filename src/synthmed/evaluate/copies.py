"""Near-copy audit of a synthetic cohort: which samples are copies of a training image, even when flipped,
shifted, noisy or blurred, with a false-positive rate calibrated on real images the generator never saw.

Paper 004 (Sec. S.6) inspects each synthetic image beside its nearest training image. This module turns
that inspection into a test with a stated error rate:

1. **Invariant similarity** (:func:`invariant_search`): the similarity of a sample ``x`` and an image
   ``y`` is the maximum normalised cross-correlation (Pearson r over all voxels; Lewis 1995, "Fast
   normalized cross-correlation") between ``y`` and ``T(x)`` over every transform ``T`` in a small
   group: flips along any subset of the spatial axes and integer shifts of up to ``max_shift`` voxels per
   axis, the correlation taken over the voxels the shifted image still covers (so whatever a copier
   filled the uncovered border with does not matter). A copier's flips and small translations do not
   hide a copy, and the matching transform is reported. The distance is ``d = 1 - similarity``.
2. **A score that blur cannot fake** (:func:`copy_score`): with ``d_1 <= d_2 <= ...`` the distances of
   ``x`` to its nearest training images, ``u(x) = (d_1 / d_2)^m``, where ``m`` is the local intrinsic
   dimension of the distances around ``x``, estimated from its 2nd to (k+1)-th neighbours by the
   Levina-Bickel maximum-likelihood estimator (Levina and Bickel 2004, NeurIPS, Eq. 8, with the
   ``(k - 2)`` bias correction of MacKay and Ghahramani 2005), the nearest neighbour left out as a
   censored observation. When the training images near ``x`` are
   a Poisson sample whose distance distribution grows as ``F(d) ~ d^m`` (the model behind that
   estimator), ``F(d_1) / F(d_2) = u`` is uniform on [0, 1] whatever the sample looks like, so ``u`` is
   itself a p-value of "x is not derived from one particular training image". A copy is far closer to
   its source than to any other training image (``u`` near 0, noisy copies included); a blurred image is
   close to many training images alike, and its smaller local dimension ``m`` is measured, not assumed.
   This is the nearest-neighbour distance ratio (NNDR; Lowe 2004, IJCV Sec. 7.1, and the synthetic-data
   privacy literature) made scale-free.
3. **Calibration on held-out real images** (:class:`CopyAuditor`): each held-out real image gets the same
   score against the training images. They are real images the generator could not copy, so under the
   null hypothesis "x copies nothing" the score of x is exchangeable with theirs, and flagging
   ``u(x) < u_(r)`` (the r-th smallest held-out score, ``r = max(1, floor(alpha (H + 1)))``) flags a
   non-copy with probability at most ``r / (H + 1)``: a split-conformal test (Vovk et al. 2005;
   Angelopoulos and Bates 2021, "A gentle introduction to conformal prediction", Sec. 1 and Appendix
   D), valid even where the Poisson model of item 2 is only approximate. A sample is flagged only when
   ``u`` is also below ``alpha`` (its model p-value): each test alone holds its rate under its own
   assumption (exchangeability with real held-out images; the local Poisson model), the conjunction under
   either. This matters for blur: real images score conservatively under the model (few small ``u``),
   so the held-out threshold sits above ``alpha``, while heavily smoothed samples follow the model and
   would cross that threshold more often than real images do. The false-positive rate is also
   *measured*: each half of the held-out images is audited as if synthetic against a threshold
   calibrated on the other half. A sample identical to a training image up to float rounding (after its
   transform) is always a copy.

The headline is the fraction of samples flagged, with its Clopper-Pearson 95% interval.

Limits: a training image with a near-duplicate in the training set (the same subject scanned twice) has
``d_1 ~ d_2``, so a copy of it is not flagged; the audit finds copies of individual images, not of a
subject's anatomy re-rendered.

Cost and memory: the exhaustive search scores ``T = 2^d (2 max_shift + 1)^d`` transforms of every query
against every training image: ``2 T P`` flops per pair (P voxels), 216 transforms for 3D at
``max_shift=1``. By default a coarse pass (2x average-pooled images, flips only, no shifts) keeps the
``candidates`` most similar training images per query and only those are scored exhaustively; exact for
copies and near-copies (their source ranks first in the coarse pass), approximate (a slight
underestimate of the similarity) for unrelated pairs, equally for samples and calibration images.
Computed with torch in float32, one block of queries at a time: memory is the normalised training images
(N x P floats) plus one block of at most ``block_bytes``, never N x M x P.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.stats
import torch
import torch.nn.functional as F

from synthmed.metrics.feature import ArrayLike

#: similarity at or above which a held-out image counts as a duplicate of a training image (dataset leakage)
DUPLICATE_SIMILARITY = 1.0 - 1e-5
#: largest local dimension m of :func:`copy_score` (all neighbours at one distance)
MAX_DIMENSION = 1e3


@dataclass(frozen=True)
class SearchConfig:
    """How :func:`invariant_search` searches.

    Attributes:
        max_shift: largest shift per axis in voxels; ``None``: 2 for 2D images, 1 for volumes.
        flips: also try every combination of flips along the spatial axes.
        candidates: references per query kept from the coarse pass and scored exhaustively; ``None``
            scores every reference with every transform.
        block_bytes: memory budget of one block of transformed queries (float32).
        device: torch device of the computation.
    """

    max_shift: int | None = None
    flips: bool = True
    candidates: int | None = 16
    block_bytes: int = 64 * 2**20
    device: str = "cpu"

    def shift_for(self, spatial_dims: int) -> int:
        s = (2 if spatial_dims == 2 else 1) if self.max_shift is None else int(self.max_shift)
        if s < 0:
            raise ValueError(f"max_shift must be >= 0, got {s}")
        return s


@dataclass(frozen=True)
class Transform:
    """``T(x) = flip(shift(x))``: ``shift(x)[i] = x[i + shift]`` (defined where ``i + shift`` is inside the
    image), then flip along the ``flip`` axes (spatial axis numbers, 0-based)."""

    flip: tuple[int, ...]
    shift: tuple[int, ...]

    def describe(self) -> str:
        parts = [f"flip axis {','.join(map(str, self.flip))}"] if self.flip else []
        if any(self.shift):
            parts.append("shift (" + ", ".join(f"{s:+d}" for s in self.shift) + ")")
        return ", ".join(parts) or "identity"


def transforms(spatial_dims: int, max_shift: int, flips: bool = True) -> list[Transform]:
    """Every flip combination times every shift in ``[-max_shift, max_shift]^d``; the identity first and
    simpler transforms before more complex ones (ties go to the simplest)."""
    flip_sets = [tuple(a for a in range(spatial_dims) if m >> a & 1) for m in range(2**spatial_dims)] if flips else [()]
    shifts = list(itertools.product(range(-max_shift, max_shift + 1), repeat=spatial_dims))
    out = [Transform(f, tuple(s)) for f in flip_sets for s in shifts]
    return sorted(out, key=lambda t: (len(t.flip), sum(abs(v) for v in t.shift), t.flip, t.shift))


def _images(x: ArrayLike, name: str) -> torch.Tensor:
    """(N, 1, *spatial) float32 tensor on the CPU, checked."""
    t = torch.as_tensor(x.detach().cpu() if isinstance(x, torch.Tensor) else np.asarray(x), dtype=torch.float32)
    if t.ndim not in (4, 5) or t.shape[1] != 1:
        raise ValueError(f"{name} must be single-channel images (N, 1, *spatial) with 2 or 3 spatial dims, "
                         f"got shape {tuple(t.shape)}")
    if t.shape[0] < 1:
        raise ValueError(f"{name} is empty")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or Inf")
    return t


def _normalise(rows: torch.Tensor) -> torch.Tensor:
    """Zero-mean, unit-norm rows (in place); a constant row becomes all zeros (correlation 0 with anything)."""
    rows -= rows.mean(dim=-1, keepdim=True)
    norm = rows.norm(dim=-1, keepdim=True)
    return rows.div_(torch.where(norm > 0, norm, torch.ones_like(norm)))


def _coarse(x: torch.Tensor) -> torch.Tensor:
    """2x average pooling (when every side has at least 8 voxels), for the candidate pass."""
    if min(x.shape[2:]) < 8:
        return x
    pool = F.avg_pool2d if x.ndim == 4 else F.avg_pool3d
    return pool(x, 2)


def _box(t: Transform, spatial: tuple[int, ...]) -> tuple[slice, ...]:
    """Voxels of ``T(x)`` that come from inside ``x``: shift ``o`` keeps ``[max(0, -o), min(n, n - o))``
    along an axis, and a flip mirrors that range (the same as the opposite shift)."""
    out = []
    for a, (o, n) in enumerate(zip(t.shift, spatial, strict=True)):
        e = -o if a in t.flip else o
        out.append(slice(max(0, -e), min(n, n - e)))
    return tuple(out)


def _transformed(x: torch.Tensor, ts: list[Transform]) -> torch.Tensor:
    """(b, 1, *spatial) -> (b, T, P): every transform of every image, zero outside its overlap box and
    centred, unit-norm inside it, so a dot product with an image is the numerator of their Pearson
    correlation over that box."""
    b, spatial = x.shape[0], tuple(x.shape[2:])
    out = torch.zeros((b, len(ts), *spatial), dtype=x.dtype, device=x.device)
    for i, t in enumerate(ts):
        v = torch.roll(x[:, 0], tuple(-o for o in t.shift), tuple(range(1, 1 + len(spatial))))
        if t.flip:
            v = torch.flip(v, [1 + a for a in t.flip])
        box = _box(t, spatial)
        inside = v[(slice(None), *box)]
        out[(slice(None), i, *box)] = _normalise(inside.reshape(b, -1).clone()).reshape(inside.shape)
    return out.reshape(b, len(ts), -1)


def _box_norms(r: torch.Tensor, ts: list[Transform]) -> torch.Tensor:
    """(T, N): the centred norm of every reference image inside each transform's overlap box (the
    denominator of the Pearson correlation; 1 where an image is constant there, so its correlation is 0)."""
    spatial = tuple(r.shape[2:])
    cache: dict[tuple[slice, ...], torch.Tensor] = {}
    rows = []
    for t in ts:
        box = _box(t, spatial)
        key = tuple((sl.start, sl.stop) for sl in box)
        if key not in cache:
            v = r[(slice(None), 0, *box)].reshape(r.shape[0], -1)
            norm = (v - v.mean(dim=1, keepdim=True)).norm(dim=1)
            cache[key] = torch.where(norm > 0, norm, torch.full_like(norm, torch.inf))
        rows.append(cache[key])
    return torch.stack(rows)


@dataclass
class SearchResult:
    """Result of :func:`invariant_search` for M queries.

    Attributes:
        indices: (M, k) reference indices, most similar first.
        similarity: (M, k) their maximum normalised cross-correlation over the transforms, in [-1, 1].
        transform: (M,) the transform of the query that matched ``indices[:, 0]``.
    """

    indices: np.ndarray
    similarity: np.ndarray
    transform: list[Transform] = field(default_factory=list)


def invariant_search(query: ArrayLike, ref: ArrayLike, cfg: SearchConfig | None = None, k: int = 1,
                     exclude_self: bool = False) -> SearchResult:
    """The k references of each query most similar under flips and small shifts (module docstring, item 1).

    Args:
        query: (M, 1, *spatial) images (any intensity range; correlation ignores offset and scale).
        ref: (N, 1, *spatial) images of the same shape.
        cfg: search settings (default :class:`SearchConfig`).
        k: references per query, ``1 <= k <= N`` (``N - 1`` with ``exclude_self``).
        exclude_self: ``query`` and ``ref`` are the same images: never match an image with itself.

    Returns:
        :class:`SearchResult`.
    """
    cfg = cfg or SearchConfig()
    q, r = _images(query, "query"), _images(ref, "reference")
    if q.shape[1:] != r.shape[1:]:
        raise ValueError(f"query and reference images differ in shape: {tuple(q.shape[1:])} vs {tuple(r.shape[1:])}")
    if exclude_self and q.shape[0] != r.shape[0]:
        raise ValueError("exclude_self needs the query and reference to be the same images")
    n = r.shape[0] - int(exclude_self)
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}], got {k}")
    d = q.ndim - 2
    s = cfg.shift_for(d)
    ts = transforms(d, s, cfg.flips)
    if min(q.shape[2:]) <= 2 * s:
        raise ValueError(f"images of {min(q.shape[2:])} voxels a side are too small for shifts of up to {s} voxels")
    dev = torch.device(cfg.device)
    rflat = r.reshape(r.shape[0], -1).to(dev)
    norms = _box_norms(r, ts).to(dev)  # (T, N)
    c = None if cfg.candidates is None else min(max(k, cfg.candidates), n)
    flips = transforms(d, 0, cfg.flips)
    coarse_ref = _normalise(_coarse(r).reshape(r.shape[0], -1).clone()).to(dev) if c is not None else None
    rows = max(1, cfg.block_bytes // (len(ts) * rflat.shape[1] * 4))
    idx_out = np.empty((q.shape[0], k), dtype=np.int64)
    sim_out = np.empty((q.shape[0], k))
    best_t: list[Transform] = []
    with torch.no_grad():
        for start in range(0, q.shape[0], rows):
            qb = q[start:start + rows].to(dev)
            b = qb.shape[0]
            self_cols = torch.arange(start, start + b, device=dev)
            if c is None:
                sims = torch.einsum("btp,np->btn", _transformed(qb, ts), rflat) / norms  # (b, T, N)
                cols = torch.arange(rflat.shape[0], device=dev).expand(b, -1)
            else:
                coarse = torch.einsum("btp,np->btn", _transformed(_coarse(qb), flips), coarse_ref).amax(dim=1)
                if exclude_self:
                    coarse[torch.arange(b), self_cols] = -torch.inf
                cols = coarse.topk(c, dim=1).indices  # (b, c)
                sims = torch.bmm(_transformed(qb, ts), rflat[cols].transpose(1, 2))  # (b, T, c)
                sims /= norms[:, cols].permute(1, 0, 2)
            best, arg_t = sims.max(dim=1)  # (b, N or c)
            if exclude_self:
                best = best.masked_fill(cols == self_cols[:, None], -torch.inf)
            top, pos = best.topk(k, dim=1)
            idx_out[start:start + b] = torch.gather(cols, 1, pos).cpu().numpy()
            sim_out[start:start + b] = top.double().cpu().numpy()
            best_t += [ts[int(i)] for i in torch.gather(arg_t, 1, pos[:, :1])[:, 0].cpu()]
    return SearchResult(idx_out, np.clip(sim_out, -1.0, 1.0), best_t)


def copy_score(similarity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The NNDR score ``u = (d_1 / d_2)^m`` of each query (module docstring, item 2) and its local dimension m.

    Args:
        similarity: (M, k + 1) similarities of each query to its k + 1 nearest training images, sorted
            descending (:func:`invariant_search` with ``k = k + 1``), k >= 3.

    Returns:
        ``(u, m)``, both (M,): u in [0, 1] (0 for an exact copy), m > 0.
    """
    s = np.asarray(similarity, np.float64)
    if s.ndim != 2 or s.shape[1] < 4:
        raise ValueError(f"copy_score needs (M, k + 1) similarities with k >= 3, got shape {s.shape}")
    d = np.maximum(1.0 - s, 0.0)
    k = d.shape[1] - 1
    # Given d_(k+1), Y_j = log(d_(k+1) / d_j), j = 1..k, are iid Exp(m). The nearest (a copy's own source)
    # is left out: Y_1 is the largest, censored at Y_2, so this is a type-II censored exponential sample,
    # whose total time on test T = sum_{j=2..k} Y_j + Y_2 is Gamma(k - 1, m): (k - 2) / T is unbiased for m.
    tail = np.maximum(d[:, 1:], 1e-12)
    logs = np.log(tail[:, -1:] / tail[:, :-1]).sum(axis=1) + np.log(tail[:, -1] / tail[:, 0])
    m = np.where(logs > 0, (k - 2) / np.where(logs > 0, logs, 1.0), MAX_DIMENSION)
    m = np.clip(m, 1e-3, MAX_DIMENSION)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(d[:, 1] > 0, d[:, 0] / np.where(d[:, 1] > 0, d[:, 1], 1.0), np.where(d[:, 0] > 0, 1.0, 0.0))
    return np.clip(ratio, 0.0, 1.0) ** m, m


def proportion_ci(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Clopper-Pearson (exact binomial) interval of a proportion ``k / n`` (scipy ``binomtest``)."""
    if n == 0:
        return (0.0, 1.0)
    ci = scipy.stats.binomtest(int(k), int(n)).proportion_ci(confidence, method="exact")
    return (float(ci.low), float(ci.high))


def conformal_rank(n_calibration: int, alpha: float) -> int:
    """Rank r of the calibration score used as threshold: ``max(1, floor(alpha (H + 1)))``; the false-positive
    rate is then at most ``r / (H + 1)``."""
    return max(1, int(np.floor(alpha * (n_calibration + 1))))


def _threshold(scores: np.ndarray, alpha: float) -> tuple[float, int]:
    """(threshold, rank): the r-th smallest of the sorted calibration ``scores``; flag strictly below it."""
    r = min(conformal_rank(len(scores), alpha), len(scores))
    return float(scores[r - 1]), r


class CopyAuditor:
    """The near-copy audit (module docstring): calibrate on held-out images once, then :meth:`add` synthetic
    samples in as many batches as needed (every sample of every set), and read :meth:`result`.

    Args:
        train: (N, 1, *spatial) the images the generator was trained on (N > ``neighbours``).
        holdout: (H, 1, *spatial) real images of the same cohort it never saw (H >= 4).
        cfg: search settings.
        alpha: target false-positive rate of the flag (rounded down to a multiple of ``1 / (H + 1)``, at
            least ``1 / (H + 1)``).
        neighbours: training neighbours that estimate the local dimension (k of :func:`copy_score`).
        seed: seed of the half split that measures the false-positive rate on held-out images.
    """

    def __init__(self, train: ArrayLike, holdout: ArrayLike, cfg: SearchConfig | None = None, alpha: float = 0.01,
                 neighbours: int = 10, seed: int = 0) -> None:
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {alpha}")
        if neighbours < 3:
            raise ValueError(f"neighbours must be at least 3, got {neighbours}")
        self.cfg = cfg or SearchConfig()
        self.train, holdout = _images(train, "train"), _images(holdout, "holdout")
        if self.train.shape[0] <= neighbours:
            raise ValueError(f"the copy audit needs more than {neighbours} training images, got {self.train.shape[0]}")
        if holdout.shape[0] < 4:
            raise ValueError(f"the copy audit needs at least 4 held-out real images to calibrate on, got "
                             f"{holdout.shape[0]}")
        if self.train.shape[1:] != holdout.shape[1:]:
            raise ValueError(f"train and holdout images differ in shape: {tuple(self.train.shape[1:])} vs "
                             f"{tuple(holdout.shape[1:])}")
        self.alpha, self.k, self.n_holdout = float(alpha), int(neighbours), int(holdout.shape[0])
        sim = self._search(holdout).similarity
        self.duplicate = sim[:, 0] >= DUPLICATE_SIMILARITY  # leakage between the dataset's own splits
        self.calibration = np.sort(copy_score(sim)[0][~self.duplicate])
        if len(self.calibration) < 2:
            raise ValueError(f"only {len(self.calibration)} held-out image(s) are not duplicates of a training "
                             "image; the audit cannot be calibrated")
        conformal, self.rank = _threshold(self.calibration, self.alpha)
        self.threshold = min(conformal, self.alpha)  # below both: see the module docstring, item 3
        self.heldout_fpr = _half_split_fpr(self.calibration, self.alpha, np.random.default_rng(seed))
        self._parts: list[dict[str, Any]] = []

    def reset(self) -> None:
        """Forget the samples added so far (the calibration is kept), to audit another cohort."""
        self._parts = []

    def _search(self, x: torch.Tensor) -> SearchResult:
        return invariant_search(x, self.train, self.cfg, k=self.k + 1)

    def add(self, synthetic: ArrayLike, ids: list[str] | None = None) -> np.ndarray:
        """Audit a batch of synthetic samples (``ids``: their names, default their running numbers); returns
        their scores ``u`` (M,)."""
        x = _images(synthetic, "synthetic")
        if x.shape[1:] != self.train.shape[1:]:
            raise ValueError(f"synthetic images have shape {tuple(x.shape[1:])}, the training images "
                             f"{tuple(self.train.shape[1:])}")
        offset = sum(len(p["score"]) for p in self._parts)
        names = [str(i) for i in ids] if ids is not None else [str(offset + i) for i in range(len(x))]
        if len(names) != len(x):
            raise ValueError(f"got {len(names)} ids for {len(x)} synthetic images")
        r = self._search(x)
        u, m = copy_score(r.similarity)
        self._parts.append({"id": names, "score": u, "dimension": m, "similarity": r.similarity[:, 0],
                            "nearest_train": r.indices[:, 0], "transform": r.transform})
        return u

    def _cat(self, key: str) -> np.ndarray:
        return np.concatenate([np.asarray(p[key]) for p in self._parts]) if self._parts else np.zeros(0)

    def result(self) -> dict[str, Any]:
        """Everything the report needs (JSON-ready except the per-sample arrays, see below).

        Returns:
            dict with ``rule`` (words), ``threshold``, ``alpha``, ``rank``, ``n_calibration``,
            ``n_holdout_duplicates``, ``expected_fpr`` (``rank / (n_calibration + 1)``, the conformal bound),
            ``heldout_fpr`` (measured, :func:`_half_split_fpr`), ``search`` (settings), ``n_train``,
            ``n_holdout``, ``n_samples``, ``n_flagged``, ``fraction`` and ``fraction_ci`` (Clopper-Pearson
            95%), ``flagged`` (a list of dicts: ``sample`` position, ``id``, ``train_index``,
            ``similarity``, ``score``, ``p_value``, ``transform``; most copy-like first), and the per-sample
            arrays ``score``, ``p_value`` (conformal), ``dimension``, ``similarity``, ``nearest_train``
            (M,) and ``transforms`` (M descriptions).
        """
        u, sim = self._cat("score"), self._cat("similarity")
        nearest = self._cat("nearest_train").astype(np.int64)
        ts = [t for p in self._parts for t in p["transform"]]
        ids = [i for p in self._parts for i in p["id"]]
        cal = self.calibration
        p = (1 + np.searchsorted(cal, u, side="right")) / (len(cal) + 1)
        flag = np.flatnonzero((u < self.threshold) | (sim >= DUPLICATE_SIMILARITY))
        flag = flag[np.lexsort((-sim[flag], u[flag]))]
        low, high = proportion_ci(len(flag), len(u))
        d = self.train.ndim - 2
        shift = self.cfg.shift_for(d)
        return {
            "rule": (f"a sample is a near-copy when it is identical to a training image up to a flip or shift, or when "
                     f"its score (d1/d2)^m is below both the {_ordinal(self.rank)}smallest score of the {len(cal)} held-out real "
                     f"images and {self.alpha:g}; d1, d2 = 1 - similarity to its nearest and second-nearest training image, m = local "
                     f"dimension estimated from its {self.k} next neighbours; similarity = maximum normalised "
                     f"cross-correlation over {'flips and ' if self.cfg.flips else ''}shifts of up to {shift} voxel(s)"),
            "threshold": self.threshold, "alpha": self.alpha, "rank": self.rank, "n_calibration": len(cal),
            "n_holdout_duplicates": int(self.duplicate.sum()), "expected_fpr": self.rank / (len(cal) + 1),
            "heldout_fpr": self.heldout_fpr,
            "search": {"max_shift": shift, "flips": self.cfg.flips, "candidates": self.cfg.candidates,
                       "neighbours": self.k, "n_transforms": len(transforms(d, shift, self.cfg.flips))},
            "n_train": int(self.train.shape[0]), "n_holdout": self.n_holdout,
            "n_samples": len(u), "n_flagged": len(flag), "fraction": len(flag) / len(u) if len(u) else float("nan"),
            "fraction_ci": [low, high],
            "flagged": [{"sample": int(i), "id": ids[i], "train_index": int(nearest[i]), "similarity": float(sim[i]),
                         "score": float(u[i]), "p_value": float(p[i]), "transform": ts[i].describe()} for i in flag],
            "score": u, "p_value": p, "dimension": self._cat("dimension"), "similarity": sim, "nearest_train": nearest,
            "transforms": [t.describe() for t in ts],
        }


def _ordinal(r: int) -> str:
    """'' for 1 (\"the smallest\"), else '2nd ', '3rd ', '11th ' ..."""
    if r == 1:
        return ""
    suffix = "th" if 10 <= r % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(r % 10, "th")
    return f"{r}{suffix} "


def _half_split_fpr(calibration: np.ndarray, alpha: float, rng: np.random.Generator) -> dict[str, Any]:
    """The false-positive rate measured on held-out real images: each half of the calibration scores
    tested against the threshold calibrated on the other half (the same rule at half the calibration size)."""
    h = len(calibration)
    half = np.zeros(h, dtype=bool)
    half[rng.permutation(h)[: h // 2]] = True
    flagged = tested = 0
    for cal in (half, ~half):
        if cal.sum() < 1 or (~cal).sum() < 1:
            continue
        tau = min(_threshold(np.sort(calibration[cal]), alpha)[0], alpha)
        flagged += int((calibration[~cal] < tau).sum())
        tested += int((~cal).sum())
    low, high = proportion_ci(flagged, tested)
    return {"n": tested, "flagged": flagged, "rate": flagged / tested if tested else float("nan"), "ci": [low, high],
            "how": "each half of the held-out images audited as synthetic against a threshold calibrated on the other half"}


def copy_audit(synthetic: ArrayLike, train: ArrayLike, holdout: ArrayLike, cfg: SearchConfig | None = None,
               alpha: float = 0.01, neighbours: int = 10, seed: int = 0) -> dict[str, Any]:
    """:class:`CopyAuditor` on one batch of synthetic images; see :meth:`CopyAuditor.result`."""
    audit = CopyAuditor(train, holdout, cfg, alpha, neighbours, seed)
    audit.add(synthetic)
    return audit.result()
