"""In-domain feature extractor: the encoder of a small convolutional autoencoder trained on the real
training split.

Natural-image networks (Inception for FID, Heusel et al. 2017) and even MedicalNet (Chen et al.
2019) may describe a small cohort poorly; an extractor trained on the cohort's own training images
gives a feature space that sees the domain, at the price of being specific to it (so its weight hash
must be recorded with every metric).  It is trained on the TRAINING split only, so validation and
test subjects never shape the feature space used to judge synthetic data.

The encoder is the alpha-SN-GAN encoder (:class:`synthmed.models.gan.encoder.AlphaEncoder`, paper
000 Fig. S4) with narrower channels; the decoder mirrors it with sub-pixel upsampling
(:class:`synthmed.nn.ShuffleConv`); the loss is the mean squared reconstruction error.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from synthmed.data.prepared import load_prepared
from synthmed.errors import CheckpointError, DataError, TrainingDiverged
from synthmed.features.base import EXTRACTORS, FeatureExtractor
from synthmed.features.planes import volume_slices
from synthmed.io_utils import atomic_path, sha256_file
from synthmed.models.gan.encoder import AlphaEncoder
from synthmed.nn import ShuffleConv, batch_norm, conv, expand_size, plan_resolution, stage_channels
from synthmed.progress import progress as progress_bar

CHECKPOINT_FORMAT = "synthmed-indomain-ae"
FORMAT_VERSION = 1


class IndomainAutoencoder(nn.Module):
    """Convolutional autoencoder: AlphaEncoder-style encoder + mirrored ShuffleConv decoder.

    Args:
        spatial_dims: 2 or 3.
        size: image size (int or one per dimension; must halve to a start shape, e.g. 16, 32, 64).
        feature_dim: latent length D (the feature dimension).
        base_channels: channels at the finest stage.
        max_channels: cap on channels per stage.

    Shape:
        x: (B, 1, *size) -> reconstruction (B, 1, *size) in [-1, 1]; ``encode``: -> (B, D).
    """

    def __init__(self, spatial_dims: int, size: int | Sequence[int], feature_dim: int = 256,
                 base_channels: int = 16, max_channels: int = 128) -> None:
        super().__init__()
        self.config = {"spatial_dims": int(spatial_dims), "size": list(expand_size(size, spatial_dims)),
                       "feature_dim": int(feature_dim), "base_channels": int(base_channels),
                       "max_channels": int(max_channels)}
        self.encoder = AlphaEncoder(spatial_dims, size, 1, feature_dim, base_channels, max_channels)
        start_shape, n_stages = plan_resolution(size, spatial_dims)
        channels = stage_channels(n_stages, base_channels, max_channels)  # coarsest first
        self.start_shape = start_shape
        self.project = nn.Linear(feature_dim, channels[0] * int(np.prod(start_shape)))
        layers: list[nn.Module] = [batch_norm(spatial_dims, channels[0]), nn.LeakyReLU(0.2)]
        for c_in, c_out in zip(channels, [*channels[1:], channels[-1]], strict=True):
            layers += [ShuffleConv(spatial_dims, c_in, c_out, 2), batch_norm(spatial_dims, c_out), nn.LeakyReLU(0.2)]
        layers += [conv(spatial_dims, channels[-1], 1, 3, padding=1), nn.Tanh()]
        self.decoder = nn.Sequential(*layers)
        self._first_channels = channels[0]

    def encode(self, x: Tensor) -> Tensor:
        """(B, 1, *size) -> (B, feature_dim)."""
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        """(B, feature_dim) -> (B, 1, *size)."""
        h = self.project(z).reshape(z.shape[0], self._first_channels, *self.start_shape)
        return self.decoder(h)

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))


#: Largest side of the in-domain autoencoder's input when evaluating (per dimensionality).  At 64^3 one
#: training step of the autoencoder (batch 16) takes about 5 s on 2 CPU cores and at 32^3 about 0.6 s,
#: so the default feature space of 3D evaluation sees volumes downsampled by a power of two to <= 32^3.
EXTRACTOR_MAX_SIDE = {2: 64, 3: 32}


def capped_size(shape: Sequence[int], max_side: int | None = None) -> tuple[int, ...]:
    """``shape`` divided by the smallest power of two that brings every side to <= ``max_side``
    (default :data:`EXTRACTOR_MAX_SIDE` of its dimensionality; 0 = unchanged).

    Halving keeps a size that halves down to the networks' 4-7 voxel start grid valid.  When the
    sides are not divisible by that power of two the shape is returned unchanged.
    """
    shape = tuple(int(s) for s in shape)
    if max_side is None:
        max_side = EXTRACTOR_MAX_SIDE.get(len(shape), 0)
    if max_side <= 0:
        return shape
    factor = 1
    while max(shape) // factor > max_side:
        factor *= 2
    if any(s % factor for s in shape):
        return shape
    return tuple(s // factor for s in shape)


def resize_images(x: Tensor, size: Sequence[int]) -> Tensor:
    """Resize (B, C, *spatial) to ``size`` with (bi/tri)linear interpolation; no-op if equal."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(size)]
    return F.interpolate(x, size=tuple(size), mode=mode, align_corners=False)


class IndomainExtractor(FeatureExtractor):
    """The encoder of a trained :class:`IndomainAutoencoder`: (B, 1, *spatial) -> (B, D).

    Inputs of another size are resized (bi/trilinear) to the training size inside forward.  Build
    it with :func:`load_indomain_extractor`.

    Args:
        encoder: the trained encoder.
        config: the autoencoder config (``spatial_dims``, ``size``, ``feature_dim`` ...).
        weights_sha256: SHA-256 of the checkpoint file it was loaded from.
    """

    def __init__(self, encoder: AlphaEncoder, config: dict[str, Any], weights_sha256: str | None) -> None:
        super().__init__()
        self.encoder = encoder
        self.name = "indomain-ae"
        self.spatial_dims = int(config["spatial_dims"])
        self.size = tuple(int(s) for s in config["size"])
        self.feature_dim = int(config["feature_dim"])
        self.weights_sha256 = weights_sha256
        interp = "bilinear" if self.spatial_dims == 2 else "trilinear"
        self.preprocessing = {"range": [-1, 1], "resize": list(self.size), "interpolation": interp,
                              "normalise": "none"}

    def forward(self, x: Tensor) -> Tensor:
        """Features of images ``x: (B, 1, *spatial)`` in [-1, 1] -> ``(B, feature_dim)``."""
        self.check_input(x)
        return self.encoder(resize_images(x, self.size))


def fit_autoencoder(model: IndomainAutoencoder, images: Tensor, iterations: int, batch_size: int = 16,
                    lr: float = 1e-3, seed: int = 0, device: str | torch.device = "cpu",
                    progress: bool = True) -> list[float]:
    """Train ``model`` to reconstruct ``images`` (mean squared error, Adam).

    Args:
        model: the autoencoder (trained in place, left on ``device`` in eval mode).
        images: (N, 1, *size) float32 in [-1, 1], on the CPU.
        iterations: optimiser steps.
        batch_size: images per step (random with replacement, seeded).
        lr: Adam learning rate (betas 0.5, 0.999).
        seed: seed of the batch sampler.
        device: where to train.
        progress: show a tqdm progress bar.

    Returns:
        The loss of every step.

    Raises:
        TrainingDiverged: if the loss becomes NaN or Inf.
    """
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.5, 0.999))
    model.to(device).train()
    losses: list[float] = []
    for step in progress_bar(range(iterations), desc="indomain-ae", disable=not progress, leave=False):
        idx = torch.randint(images.shape[0], (min(batch_size, images.shape[0]),), generator=gen)
        x = images[idx].to(device)
        loss = F.mse_loss(model(x), x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if not np.isfinite(losses[-1]):
            raise TrainingDiverged(f"indomain-ae: reconstruction loss is {losses[-1]} at step {step}")
    model.eval()
    return losses


def _training_images(source: str | Path | np.ndarray, subset: str, fold: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Images to train on and where they came from (a prepared folder's split, or an array)."""
    if isinstance(source, np.ndarray):
        arr = np.ascontiguousarray(source, dtype=np.float32)
        return arr, {"source": "array", "data_sha256": hashlib.sha256(arr.tobytes()).hexdigest(), "n": len(arr)}
    ds = load_prepared(source)
    idx = ds.indices(subset, fold)
    if len(idx) == 0:
        raise DataError(f"{ds.root}: subset {subset!r} (fold {fold}) is empty; cannot train indomain-ae")
    info = {"source": str(ds.root), "images_sha256": ds.meta.get("images_sha256"), "subset": subset,
            "fold": fold, "n": int(len(idx))}
    return np.asarray(ds.images[idx], dtype=np.float32), info


def _to_training_tensor(images: np.ndarray, spatial_dims: int, size: int | Sequence[int] | None,
                        slices_per_plane: int) -> Tensor:
    """(N, 1, *spatial) -> (M, 1, *size); 3D volumes give 2D slices of all three planes."""
    data_dims = images.ndim - 2
    if images.ndim not in (4, 5) or images.shape[1] != 1 or spatial_dims > data_dims:
        raise DataError(f"cannot train a {spatial_dims}D in-domain extractor on images of shape {images.shape}")
    if spatial_dims == data_dims:
        parts = [images]
    else:  # 2D extractor on volumes: slices of the three planes (for the 2.5D mode)
        parts = volume_slices(images, slices_per_plane)
    target = expand_size(size if size is not None else tuple(parts[-1].shape[2:]), spatial_dims)
    return torch.cat([resize_images(torch.from_numpy(np.ascontiguousarray(p)), target) for p in parts])


def train_indomain_extractor(
    prepared_dir_or_images: str | Path | np.ndarray,
    out_path: str | Path,
    spatial_dims: int | None = None,
    size: int | Sequence[int] | None = None,
    iterations: int = 1000,
    seed: int = 0,
    device: str | torch.device = "cpu",
    *,
    feature_dim: int = 256,
    batch_size: int = 16,
    lr: float = 1e-3,
    base_channels: int = 16,
    max_channels: int = 128,
    subset: str = "train",
    fold: int = 0,
    slices_per_plane: int = 3,
    progress: bool = True,
) -> Path:
    """Train the in-domain autoencoder on the real training split and save it atomically.

    Args:
        prepared_dir_or_images: a prepared dataset folder (its ``subset``/``fold`` rows are used:
            the training split by default) or an (N, 1, *spatial) array already restricted to
            training images.
        out_path: the checkpoint file to write (``.pt``).
        spatial_dims: 2 or 3 (default: the data's); 2 on volumes trains on ``slices_per_plane``
            slices of each of the three planes (for ``planes:indomain-ae``).
        size: training image size (default: the data's; images are resized to it).
        iterations: optimiser steps.
        seed: seeds the initialisation and the batch sampler.
        device: where to train.
        feature_dim: latent/feature length D.
        batch_size, lr, base_channels, max_channels: see :class:`IndomainAutoencoder` and
            :func:`fit_autoencoder`.
        subset, fold: which rows of a prepared dataset to train on.
        slices_per_plane: slices per plane when training a 2D extractor on volumes.
        progress: show a progress bar.

    Returns:
        ``out_path``; load it with :func:`load_indomain_extractor`.
    """
    images, data_info = _training_images(prepared_dir_or_images, subset, fold)
    spatial_dims = images.ndim - 2 if spatial_dims is None else spatial_dims
    x = _to_training_tensor(images, spatial_dims, size, slices_per_plane)
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
        torch.manual_seed(seed)
        model = IndomainAutoencoder(spatial_dims, tuple(x.shape[2:]), feature_dim, base_channels, max_channels)
    losses = fit_autoencoder(model, x, iterations, batch_size, lr, seed, device, progress)
    ckpt = {
        "format": CHECKPOINT_FORMAT,
        "format_version": FORMAT_VERSION,
        "config": model.config,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "training": {**data_info, "iterations": iterations, "seed": seed, "batch_size": batch_size, "lr": lr,
                     "n_training_images": int(x.shape[0]), "slices_per_plane": slices_per_plane,
                     "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None},
    }
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        torch.save(ckpt, tmp)
    return out_path


def load_indomain_autoencoder(path: str | Path, sha256: str | None = None) -> tuple[IndomainAutoencoder, dict]:
    """Load a checkpoint written by :func:`train_indomain_extractor`.

    Returns:
        The autoencoder (eval mode) and the whole checkpoint dict (``config``, ``training`` ...).

    Raises:
        CheckpointError: naming the file when it is missing, of another kind, or has the wrong hash.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: in-domain extractor checkpoint not found; create it with "
                              "synthmed.features.train_indomain_extractor")
    if sha256 is not None and (actual := sha256_file(path)).lower() != sha256.lower():
        raise CheckpointError(f"{path}: SHA-256 {actual} does not match the expected {sha256}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt or foreign pickles raise many types
        raise CheckpointError(f"{path}: cannot read checkpoint ({e})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not an in-domain extractor checkpoint (format {CHECKPOINT_FORMAT!r})")
    cfg = ckpt["config"]
    model = IndomainAutoencoder(cfg["spatial_dims"], cfg["size"], cfg["feature_dim"], cfg["base_channels"],
                                cfg["max_channels"])
    try:
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit the saved config ({str(e).splitlines()[0]})") from None
    return model.eval(), ckpt


def load_indomain_extractor(path: str | Path | None, sha256: str | None = None) -> IndomainExtractor:
    """The feature extractor of a trained in-domain autoencoder checkpoint.

    ``weights_sha256`` is the SHA-256 of the checkpoint file.

    Raises:
        CheckpointError: when ``path`` is None or the file is missing/unfit.
    """
    if path is None:
        raise CheckpointError("indomain-ae needs weights=PATH of a checkpoint made by "
                              "synthmed.features.train_indomain_extractor on the real training split")
    model, ckpt = load_indomain_autoencoder(path, sha256)
    return IndomainExtractor(model.encoder, ckpt["config"], sha256_file(path)).eval()


#: Short alias.
load_indomain = load_indomain_extractor


@EXTRACTORS.register("indomain-ae", help="In-domain autoencoder encoder trained on the real training split "
                                         "(default); weights=checkpoint from train_indomain_extractor")
def _indomain_factory(weights: str | Path | None = None, sha256: str | None = None) -> IndomainExtractor:
    return load_indomain_extractor(weights, sha256)
