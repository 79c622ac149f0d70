"""Feature extractors (3D, 2.5D, 2D) for the metrics, registered in ``EXTRACTORS``.

Metrics take features, never images (DESIGN.md section 4): extract once with
:func:`extract_features` / :func:`cached_features`, and record ``extractor.describe()`` (name, weight
SHA-256, preprocessing) with every result.

Registered extractors: ``medicalnet-resnet10/18/34/50`` (MedicalNet, local weights only),
``indomain-ae`` (trained on the real training split; the default), ``inception-v3`` (2D pool3,
torchvision or pytorch-fid weights, local only; also class logits for the Inception score),
``vgg16`` (2D fc7/pool5, torchvision weights, local only; also ReLU maps for perceptual losses) and
``planes:<2D name>`` (three-plane 2.5D mode: ``planes:indomain-ae``, ``planes:inception-v3``,
``planes:vgg16``).
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
from synthmed.features.inception import (
    INCEPTION_WEIGHT_FILES,
    InceptionV3,
    InceptionV3Extractor,
    load_checked_state_dict,
    load_weights_file,
)
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
from synthmed.features.vgg import VGG16, VGG16_RELUS, VGG16Extractor, load_vgg16

__all__ = [
    "DEFAULT_EXTRACTOR",
    "EXTRACTORS",
    "INCEPTION_WEIGHT_FILES",
    "MEDICALNET_URL",
    "PLANES_PREFIX",
    "FeatureExtractor",
    "InceptionV3",
    "InceptionV3Extractor",
    "IndomainAutoencoder",
    "IndomainExtractor",
    "MedicalNetExtractor",
    "ThreePlaneExtractor",
    "VGG16",
    "VGG16Extractor",
    "VGG16_RELUS",
    "array_sha256",
    "build_extractor",
    "cache_path",
    "cached_features",
    "extract_features",
    "fit_autoencoder",
    "load_checked_state_dict",
    "load_indomain",
    "load_indomain_autoencoder",
    "load_indomain_extractor",
    "load_medicalnet_state_dict",
    "load_vgg16",
    "load_weights_file",
    "medicalnet_backbone",
    "plane_slices",
    "slice_positions",
    "train_indomain_extractor",
    "volume_slices",
    "zscore_foreground",
]
