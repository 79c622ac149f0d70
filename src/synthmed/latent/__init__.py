"""Encoder features and the latent space (paper 001, Secs. IV-D and IV-E).

* ``codes``: latent codes of real images from a trained run's encoder (``synthmed encode``);
* ``properties``: measured properties (brain and ventricle volume by intensity thresholds, and
  columns of the BIDS ``participants.tsv`` such as age);
* ``regression``: cross-validated ridge R^2 of a property from the codes, and its linear latent direction;
* ``traverse``: images generated along a latent direction with the property measured on each;
* ``analysis``: the ``synthmed latent ridge`` / ``synthmed latent traverse`` commands as functions.
"""

from synthmed.latent.analysis import format_ridge_table, ridge_report, traverse_run
from synthmed.latent.codes import Codes, encode_dataset, load_codes, save_codes
from synthmed.latent.properties import (
    IMAGE_PROPERTIES,
    ThresholdOptions,
    measure_images,
    subject_property,
    total_brain_volume,
    ventricle_volume,
)
from synthmed.latent.regression import LinearDirection, RidgeResult, cross_validated_r2, fit_linear_direction
from synthmed.latent.traverse import Traversal, save_traversal_figure, traverse

__all__ = [
    "IMAGE_PROPERTIES",
    "Codes",
    "LinearDirection",
    "RidgeResult",
    "ThresholdOptions",
    "Traversal",
    "cross_validated_r2",
    "encode_dataset",
    "fit_linear_direction",
    "format_ridge_table",
    "load_codes",
    "measure_images",
    "ridge_report",
    "save_codes",
    "save_traversal_figure",
    "subject_property",
    "total_brain_volume",
    "traverse",
    "traverse_run",
    "ventricle_volume",
]
