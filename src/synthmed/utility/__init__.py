"""synthmed.utility: what a synthetic cohort is worth to a downstream diagnosis classifier.

Paper 000's protocol (stratified 5-fold cross-validation, 60/20/20 train/validation/test, training
sets of Table 1 including the "infinite" one, ANOVA and Bonferroni t-tests), paper 004's
AUC_real - AUC_syn, Delta_syn and occlusion maps, and paper 003's GAN-train SVM.

    from synthmed.utility import load_utility_config, run_utility
    html = run_utility(load_utility_config("utility_quick", ["data.path=prepared/ds"]), "out/utility")
"""

from synthmed.utility import svm as _svm  # noqa: F401  (registers "svm")
from synthmed.utility.classifiers import (
    DenseNet121Classifier,
    DiagnosisCNN,
    HAGANClassifierCNN,
    build_classifier,
    count_parameters,
)
from synthmed.utility.compositions import COMPOSITIONS, Composition, composition_counts, make_partition
from synthmed.utility.config import UtilityConfig, build_utility_config, load_utility_config
from synthmed.utility.metrics import classification_metrics, sensitivity_specificity
from synthmed.utility.runner import run_utility
from synthmed.utility.svm import GANTrainSVM

__all__ = [
    "COMPOSITIONS",
    "Composition",
    "DenseNet121Classifier",
    "DiagnosisCNN",
    "GANTrainSVM",
    "HAGANClassifierCNN",
    "UtilityConfig",
    "build_classifier",
    "build_utility_config",
    "classification_metrics",
    "composition_counts",
    "count_parameters",
    "load_utility_config",
    "make_partition",
    "run_utility",
    "sensitivity_specificity",
]
