"""Ex-post density estimation: sampling a VAE from a Gaussian mixture fitted to its own training codes.

Ghosh et al. 2020, "From Variational to Deterministic Autoencoders" (ICLR), Sec. 4: a VAE's aggregate
posterior q(z) = E_x q(z|x) rarely matches the prior N(0, I) it was trained against, so codes drawn from
N(0, I) land where the decoder saw few training codes (faint, blurred or average-looking samples).  They fit
a density to the latent codes of the training images *after* training ("ex-post") and sample from it; a
10-component full-covariance Gaussian mixture improved FID over N(0, I) for every model they tried (their
Table 1, rows "GMM" against "N").  The decoder is left untouched.

Here (``sample.prior: gmm``, ``synthmed sample --prior gmm``):

* the codes are the posterior means mu(x) (``family.encode``) of exactly the images the run trained on
  (``data.json``: the prepared folder ``path`` and ``train_subject_ids``), encoded in eval mode;
* the mixture is scikit-learn's ``GaussianMixture`` (``covariance_type="full"``, k-means initialisation,
  ``random_state`` :data:`GMM_SEED`), so a fit is reproducible;
* it is cached in ``RUN/prior/gmm<K>-<checkpoint SHA-256 prefix>.npz`` (weights, means, covariances and a
  JSON record of what it was fitted to), written atomically; a new checkpoint has another name, so it is
  refitted, and a cache whose record disagrees with the run is refitted too;
* a conditional VAE (``model.conditioning: cvae``, Sohn et al. 2015) gets one mixture per class, fitted to
  the codes mu(x, y) of that class's training images and sampled for that class (at most as many components
  as the class has images); multi-label runs are refused, since their label combinations have no single
  class to fit;
* sample ``i`` draws eps ~ N(0, I) (truncated by ``sample.truncation`` when set) and a uniform u from its own
  seed, picks component k by u against the cumulative weights, and returns ``z = mean_k + L_k eps``
  (L_k the Cholesky factor of covariance_k): the code depends only on the seed, never on the batch.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from synthmed import __version__
from synthmed.errors import ConfigError, DataError
from synthmed.io_utils import atomic_path, sha256_bytes

if TYPE_CHECKING:
    from synthmed.data.prepared import PreparedDataset
    from synthmed.generate.sample import LoadedRun

log = logging.getLogger(__name__)

#: ``random_state`` of every mixture fit (its k-means initialisation), so the fitted prior is reproducible
GMM_SEED = 0
#: the run's subfolder with the cached mixtures
PRIOR_DIR = "prior"
#: the key of the one mixture of an unconditional run (conditional runs: the class index)
ALL = -1
#: images per forward pass while encoding the training set (the codes do not depend on it)
ENCODE_BATCH = 32


@dataclass
class GaussianMixture:
    """A Gaussian mixture in latent space: ``weights`` (K,), ``means`` (K, D), ``covariances`` (K, D, D)."""

    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    _chol: np.ndarray = field(init=False, repr=False)
    _cum: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.weights = np.asarray(self.weights, np.float64)
        self.means = np.asarray(self.means, np.float64)
        self.covariances = np.asarray(self.covariances, np.float64)
        self._chol = np.linalg.cholesky(self.covariances)
        self._cum = np.cumsum(self.weights / self.weights.sum())

    @property
    def n_components(self) -> int:
        return len(self.weights)

    def draw(self, eps: np.ndarray, u: float) -> np.ndarray:
        """The code of standard-normal ``eps`` (D,) in the component that uniform ``u`` in [0, 1) picks."""
        k = min(int(np.searchsorted(self._cum, u, side="right")), self.n_components - 1)
        return self.means[k] + self._chol[k] @ eps


def fit_gmm(codes: np.ndarray, n_components: int, seed: int = GMM_SEED) -> tuple[GaussianMixture, dict[str, Any]]:
    """A full-covariance Gaussian mixture fitted to ``codes`` (N, D) by EM (Ghosh et al. 2020, Sec. 4),
    with ``min(n_components, N)`` components; and a record of the fit (components, converged, EM iterations,
    mean log-likelihood per code).

    Raises:
        DataError: fewer than 2 codes.
    """
    from sklearn.mixture import GaussianMixture as SkGMM  # imported here: sklearn is slow to import

    codes = np.asarray(codes, np.float64)
    if len(codes) < 2:
        raise DataError(f"the gmm prior needs the codes of at least 2 training images, got {len(codes)}")
    k = min(int(n_components), len(codes))
    gm = SkGMM(n_components=k, covariance_type="full", random_state=seed).fit(codes)
    fit = {"components": k, "n_codes": len(codes), "converged": bool(gm.converged_), "em_iterations": int(gm.n_iter_),
           "mean_log_likelihood": float(gm.score(codes))}
    return GaussianMixture(gm.weights_, gm.means_, gm.covariances_), fit


@dataclass
class LatentPrior:
    """The fitted prior of a run: one mixture (key :data:`ALL`) or one per class (conditional runs)."""

    mixtures: dict[int, GaussianMixture]
    #: what it was fitted to (checkpoint, data, subjects, components, seed, sklearn version) and each fit's record
    meta: dict[str, Any]

    def draw(self, eps: torch.Tensor, u: float, label: int | None = None) -> torch.Tensor:
        """The latent code (D,) of noise ``eps`` and uniform ``u``: from the class's mixture for a conditional
        prior (``label``), else from the one mixture."""
        key = ALL if ALL in self.mixtures else int(label) if label is not None else None
        if key not in self.mixtures:
            raise ConfigError(f"the gmm prior has no mixture for class {label} (fitted classes: "
                              f"{', '.join(map(str, sorted(self.mixtures)))})")
        return torch.from_numpy(self.mixtures[key].draw(eps.double().numpy(), u)).to(eps.dtype)


def cache_path(run: LoadedRun, components: int) -> Path | None:
    """``RUN/prior/gmm<K>-<checkpoint SHA-256 prefix>.npz`` (None for a run without a folder)."""
    if run.root is None:
        return None
    return Path(run.root) / PRIOR_DIR / f"gmm{components}-{run.checkpoint_sha256[:16]}.npz"


def save_prior(prior: LatentPrior, path: Path) -> None:
    """Write ``path`` (.npz: ``weights_<key>``, ``means_<key>``, ``covariances_<key>`` and ``meta`` JSON) atomically."""
    arrays: dict[str, np.ndarray] = {"meta": np.array(json.dumps(prior.meta))}
    for key, m in prior.mixtures.items():
        arrays.update({f"weights_{key}": m.weights, f"means_{key}": m.means, f"covariances_{key}": m.covariances})
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def load_prior(path: Path) -> LatentPrior | None:
    """The prior cached in ``path``, or None when it is absent or unreadable (then it is refitted)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            keys = sorted({int(n.split("_", 1)[1]) for n in z.files if n.startswith("weights_")})
            mixtures = {k: GaussianMixture(z[f"weights_{k}"], z[f"means_{k}"], z[f"covariances_{k}"]) for k in keys}
    except (OSError, KeyError, ValueError, np.linalg.LinAlgError):
        return None
    return LatentPrior(mixtures, meta) if mixtures else None


def training_rows(ds: PreparedDataset, run_data: dict[str, Any]) -> np.ndarray:
    """Rows of ``ds`` a run trained on: its ``data.json`` ``train_subject_ids`` (runs from before they were
    recorded: the trainval split)."""
    ids = run_data.get("train_subject_ids")
    if not ids:
        return ds.indices("trainval")
    seen = set(ids)
    return np.array([i for i, s in enumerate(ds.subject_ids) if s in seen], dtype=np.int64)


def training_data(run: LoadedRun, data: str | Path | None = None) -> tuple[PreparedDataset, np.ndarray]:
    """The prepared dataset a run trained on and its training rows.

    Args:
        data: the prepared folder (default: the ``path`` in the run's ``data.json``); it must hold the
            images the run was trained on (same ``images_sha256``).

    Raises:
        DataError: the folder is gone, holds other images, or lacks some of the run's training subjects.
    """
    from synthmed.data.prepared import load_prepared

    where = Path(data) if data else Path(str(run.data.get("path") or ""))
    if not (where / "dataset.json").is_file():
        raise DataError(f"{where}: the prepared data {run.root or 'the run'} was trained on is gone; the gmm prior is "
                        "fitted to the codes of its training images: restore the folder or name its new place "
                        "with --prior-data DIR")
    ds = load_prepared(where)
    want, have = run.data.get("images_sha256"), ds.meta.get("images_sha256")
    if want and have and want != have:
        raise DataError(f"{where}: images (SHA-256 {have[:12]}) are not those the run was trained on ({want[:12]}); "
                        "the gmm prior must be fitted to the run's own training images")
    rows = training_rows(ds, run.data)
    expected = len(run.data.get("train_subject_ids") or rows)
    if len(rows) != expected:
        raise DataError(f"{where}: holds {len(rows)} of the run's {expected} training subjects")
    return ds, rows


@torch.no_grad()
def posterior_means(run: LoadedRun, images: np.ndarray, labels: np.ndarray | None = None,
                    batch_size: int = ENCODE_BATCH) -> np.ndarray:
    """The posterior means mu(x[, y]) (N, D) of ``images`` (N, 1, *spatial) in [-1, 1], encoder in eval mode."""
    enc = run.nets[run.family.encoder_key]
    was = enc.training
    enc.eval()
    try:
        out = []
        for s in range(0, len(images), batch_size):
            x = torch.as_tensor(np.asarray(images[s:s + batch_size]), dtype=torch.float32, device=run.device)
            if labels is None:
                out.append(run.family.encode(run.nets, x))
            else:
                y = torch.as_tensor(labels[s:s + batch_size], device=run.device)
                out.append(run.family.encode(run.nets, x, y))  # type: ignore[call-arg]
        return torch.cat(out).double().cpu().numpy()
    finally:
        enc.train(was)


def fit_prior(run: LoadedRun, components: int, data: str | Path | None = None) -> LatentPrior:
    """Encode the run's training images and fit the mixture(s) (one per class for a ``cvae`` run).

    Raises:
        ConfigError: a family without a Gaussian posterior, or a multi-label conditional run.
        DataError: see :func:`training_data`.
    """
    check_family(run)
    cond = run.conditioning
    if run.conditional and cond.get("multi_label"):
        raise ConfigError(f"{run.root}: the gmm prior fits one mixture per class, but this multi-label run's "
                          "label combinations have none; sample it with --prior standard")
    ds, rows = training_data(run, data)
    images = ds.images[rows]
    labels = None
    if run.conditional:
        if ds.labels is None:
            raise DataError(f"{ds.root}: unlabelled, but the conditional run needs each training image's class")
        labels = np.asarray(ds.labels[rows], dtype=np.int64)
    codes = posterior_means(run, images, labels)
    groups = {ALL: np.arange(len(rows))} if labels is None else {int(c): np.flatnonzero(labels == c)
                                                                 for c in np.unique(labels)}
    mixtures, fits = {}, {}
    for key, idx in groups.items():
        mixtures[key], fits[str(key)] = fit_gmm(codes[idx], components)
    import sklearn

    meta = {"synthmed_version": __version__, "method": "ex-post density estimation (Ghosh et al. 2020, Sec. 4)",
            "model": run.cfg.model.name, "checkpoint_sha256": run.checkpoint_sha256, "components": components,
            "covariance": "full", "seed": GMM_SEED, "sklearn_version": sklearn.__version__,
            "data": str(ds.root.resolve()), "images_sha256": ds.meta.get("images_sha256"),
            "subjects_sha256": sha256_bytes("\n".join(ds.subject_ids[i] for i in rows).encode()),
            "n_codes": len(rows), "per_class": labels is not None, "fits": fits}
    return LatentPrior(mixtures, meta)


def check_family(run: LoadedRun) -> None:
    """ConfigError in one line when the run's family has no Gaussian posterior to fit a prior to."""
    from synthmed.config import check_prior

    check_prior("gmm", 1, run.family, "--prior gmm")


def run_prior(run: LoadedRun) -> LatentPrior | None:
    """The prior of ``run.prior`` (None for ``standard``): the one already loaded, the cached one, or a new fit
    (cached in the run folder; a read-only run folder is only logged)."""
    if run.prior == "standard":
        return None
    have = run.latent_prior
    if have is not None and have.meta.get("checkpoint_sha256") == run.checkpoint_sha256 \
            and have.meta.get("components") == run.prior_components:
        return have
    check_family(run)
    path = cache_path(run, run.prior_components)
    prior = load_prior(path) if path is not None and path.is_file() else None
    trained_on = run.data.get("images_sha256")
    if prior is not None and (prior.meta.get("checkpoint_sha256") != run.checkpoint_sha256
                              or prior.meta.get("components") != run.prior_components
                              or (trained_on and prior.meta.get("images_sha256") != trained_on)):
        prior = None
    if prior is None:
        prior = fit_prior(run, run.prior_components, run.prior_data)
        if path is not None:
            try:
                save_prior(prior, path)
            except OSError as e:
                log.warning("%s: could not cache the fitted gmm prior (%s); it will be refitted next time", path, e)
    run.latent_prior = prior
    return prior
