"""2.5D features: a 2D extractor applied to slices along the three axes of a volume.

The common way to use 2D feature spaces on 3D data (e.g. the "2.5D" FID over axial, coronal and
sagittal slices): slices normal to each array axis are encoded by a 2D extractor, averaged over the
slices of a plane, and the three plane features are concatenated (or averaged).  With arrays in RAS
order (x, y, z) the planes normal to axes 0, 1, 2 are sagittal, coronal and axial.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from synthmed.features.base import EXTRACTORS, PLANES_PREFIX, FeatureExtractor

#: plane names by the array axis (of D, H, W) they are normal to, for RAS-ordered arrays.
PLANE_NAMES = ("sagittal", "coronal", "axial")


def slice_positions(length: int, k: int) -> list[int]:
    """Indices of ``k`` slices along an axis of ``length``: the middle one for k = 1, otherwise
    evenly spaced over the central half (where the anatomy is)."""
    if k < 1:
        raise ValueError(f"slices per plane must be >= 1, got {k}")
    if k == 1:
        return [(length - 1) // 2]
    return [int(round(p)) for p in np.linspace(0.25 * (length - 1), 0.75 * (length - 1), k)]


def plane_slices(volumes: Tensor, axis: int, k: int = 1) -> Tensor:
    """The ``k`` slices normal to spatial ``axis`` (0, 1 or 2) of each volume.

    Args:
        volumes: (B, C, D, H, W).
        axis: spatial axis the slices are normal to.
        k: slices per volume (:func:`slice_positions`).

    Returns:
        (B * k, C, *the other two spatial sizes), ordered volume-major.
    """
    dim = axis + 2
    idx = torch.tensor(slice_positions(volumes.shape[dim], k), device=volumes.device)
    picked = volumes.index_select(dim, idx).movedim(dim, 1)  # (B, k, C, S1, S2)
    return picked.reshape(volumes.shape[0] * k, volumes.shape[1], *picked.shape[3:])


def volume_slices(images: np.ndarray, k: int = 1) -> list[np.ndarray]:
    """2D training slices from volumes: ``k`` slices per plane per volume, grouped by plane.

    Args:
        images: (N, 1, D, H, W).
        k: slices per plane.

    Returns:
        Three arrays (one per plane), each (N * k, 1, S1, S2); plane shapes differ for
        non-cubic volumes.
    """
    t = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    return [plane_slices(t, axis, k).numpy() for axis in range(3)]


class ThreePlaneExtractor(FeatureExtractor):
    """2.5D wrapper: (B, 1, D, H, W) -> per-plane 2D features, averaged over slices, combined.

    Args:
        extractor_2d: a 2D :class:`FeatureExtractor` (it must accept every plane's slice size;
            the in-domain extractor resizes its inputs).
        slices_per_plane: K slices per plane (:func:`slice_positions`).
        reduce: ``"concat"`` (D_out = 3 * D) or ``"mean"`` over planes (D_out = D).

    Shape:
        x: (B, 1, D, H, W) -> (B, 3 * D) or (B, D).
    """

    def __init__(self, extractor_2d: FeatureExtractor, slices_per_plane: int = 1, reduce: str = "concat") -> None:
        super().__init__()
        if extractor_2d.spatial_dims != 2:
            raise ValueError(f"{PLANES_PREFIX} needs a 2D extractor, {extractor_2d.name!r} is "
                             f"{extractor_2d.spatial_dims}D")
        if reduce not in ("concat", "mean"):
            raise ValueError(f"reduce must be 'concat' or 'mean', got {reduce!r}")
        slice_positions(2, slices_per_plane)  # validates k
        self.inner = extractor_2d
        self.slices_per_plane = slices_per_plane
        self.reduce = reduce
        self.name = PLANES_PREFIX + extractor_2d.name
        self.spatial_dims = 3
        self.feature_dim = extractor_2d.feature_dim * (3 if reduce == "concat" else 1)
        self.weights_sha256 = extractor_2d.weights_sha256
        self.preprocessing = {
            "planes": list(PLANE_NAMES),
            "slices_per_plane": slices_per_plane,
            "slice_positions": "middle" if slices_per_plane == 1 else "evenly spaced over the central half",
            "reduce": f"mean over slices, {reduce} over planes",
            "inner": extractor_2d.preprocessing,
        }

    def forward(self, x: Tensor) -> Tensor:
        """Features of volumes ``x: (B, 1, D, H, W)`` -> ``(B, feature_dim)``."""
        self.check_input(x)
        k = self.slices_per_plane
        per_plane = []
        for axis in range(3):
            feats = self.inner(plane_slices(x, axis, k))  # (B * k, D)
            per_plane.append(feats.reshape(x.shape[0], k, -1).mean(dim=1))
        if self.reduce == "concat":
            return torch.cat(per_plane, dim=1)
        return torch.stack(per_plane, dim=0).mean(dim=0)


def _planes_indomain(weights: Any = None, slices_per_plane: int = 1, reduce: str = "concat",
                     **kwargs: Any) -> ThreePlaneExtractor:
    from synthmed.features.indomain import load_indomain_extractor

    return ThreePlaneExtractor(load_indomain_extractor(weights, **kwargs), slices_per_plane, reduce)


EXTRACTORS.register(PLANES_PREFIX + "indomain-ae",
                    help="2.5D: a 2D in-domain autoencoder on sagittal, coronal and axial slices")(_planes_indomain)


def _register_planes(name_2d: str, description: str) -> None:
    """Register ``planes:<name_2d>``: the 2D extractor ``name_2d`` (built with the same weights and
    keyword arguments) in the three-plane wrapper."""

    def factory(weights: Any = None, slices_per_plane: int = 1, reduce: str = "concat",
                **kwargs: Any) -> ThreePlaneExtractor:
        import synthmed.features  # noqa: F401  (registers name_2d)

        return ThreePlaneExtractor(EXTRACTORS.get(name_2d)(weights=weights, **kwargs), slices_per_plane, reduce)

    EXTRACTORS.register(PLANES_PREFIX + name_2d,
                        help=f"2.5D: {description} on sagittal, coronal and axial slices")(factory)


_register_planes("inception-v3", "Inception-v3 pool3")
_register_planes("vgg16", "VGG16 fc7/pool5")
