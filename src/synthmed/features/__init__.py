"""Feature extractors (3D, 2.5D, 2D) for the metrics, registered in ``EXTRACTORS``.

Metrics take features, never images (DESIGN.md section 4): extract once with
:func:`extract_features` / :func:`cached_features`, and record ``extractor.describe()`` (name, weight
SHA-256, preprocessing) with every result.

Registered extractors: ``medicalnet-resnet10/18/34/50`` (MedicalNet, local weights only),
``indomain-ae`` (trained on the real training split; the default) and ``planes:<2D name>``
(three-plane 2.5D mode).
"""

from synthmed.features.base import (
    DEFAULT_EXTRACTOR,
    EXTRACTORS,
    PLANES_PREFIX,
    FeatureExtractor,
    build_extractor,
    extract_features,
)
from synthmed.features.cache import array_sha256, cache_path, cached_features
from synthmed.features.indomain import (
    IndomainAutoencoder,
    IndomainExtractor,
    fit_autoencoder,
    load_indomain,
    load_indomain_autoencoder,
    load_indomain_extractor,
    train_indomain_extractor,
)
from synthmed.features.medicalnet import (
    MEDICALNET_URL,
    MedicalNetExtractor,
    load_medicalnet_state_dict,
    medicalnet_backbone,
    zscore_foreground,
)
from synthmed.features.planes import ThreePlaneExtractor, plane_slices, slice_positions, volume_slices

__all__ = [
    "DEFAULT_EXTRACTOR",
    "EXTRACTORS",
    "MEDICALNET_URL",
    "PLANES_PREFIX",
    "FeatureExtractor",
    "IndomainAutoencoder",
    "IndomainExtractor",
    "MedicalNetExtractor",
    "ThreePlaneExtractor",
    "array_sha256",
    "build_extractor",
    "cache_path",
    "cached_features",
    "extract_features",
    "fit_autoencoder",
    "load_indomain",
    "load_indomain_autoencoder",
    "load_indomain_extractor",
    "load_medicalnet_state_dict",
    "medicalnet_backbone",
    "plane_slices",
    "slice_positions",
    "train_indomain_extractor",
    "volume_slices",
    "zscore_foreground",
]
