"""Phantom cohort end to end: LAS files, registration, template overlay, documented group effect."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from synthmed.data.phantom import make_phantom_cohort, phantom_group_difference
from synthmed.data.prepared import load_prepared
from synthmed.data.preprocess import PreprocessOptions, run_preprocess
from synthmed.data.registration import resample_onto
from synthmed.data.template import load_template


@pytest.fixture(scope="module")
def phantom_prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("phantom")
    raw = make_phantom_cohort(root / "raw", n_per_class=3, seed=1, spacing=4.0)
    out = run_preprocess(PreprocessOptions(input=raw, out=root / "prep", labels_csv=raw / "labels.csv",
                                           spacing=4.0, size=32, n_folds=2, test_fraction=0.0, progress=False))
    return raw, out


def test_phantom_files(phantom_prepared: tuple[Path, Path]) -> None:
    raw, _ = phantom_prepared
    files = sorted(raw.glob("*.nii.gz"))
    assert len(files) == 6
    img = nib.load(files[0])
    assert nib.aff2axcodes(img.affine) == ("L", "A", "S") and img.header.get_zooms() == (4.0, 4.0, 4.0)
    assert img.get_data_dtype() == np.int16 and np.asarray(img.dataobj).min() == 0
    labels = (raw / "labels.csv").read_text(encoding="utf-8").splitlines()
    assert labels[0] == "subject_id,label" and sum(",atrophy" in r for r in labels) == 3
    doc = phantom_group_difference()
    assert doc["gm_intensity_factor"] == pytest.approx(0.85) and doc["expected_sign"] == -1


def test_phantom_prepared_overlays_template(phantom_prepared: tuple[Path, Path]) -> None:
    _, out = phantom_prepared
    ds = load_prepared(out)
    assert ds.images.shape == (6, 1, 32, 32, 32)
    assert all(q["template_correlation"] > 0.9 for q in ds.meta["qc"].values())
    tpl = load_template("mni152", 4.0)
    assert ds.meta["preprocessing"]["template"]["sha256"] == tpl.sha256
    # the template resampled through the prepared affine must overlay the prepared images
    ref = resample_onto(tpl.to_sitk(), ds.affine, ds.shape)
    mean = np.asarray(ds.images).mean(axis=(0, 1))
    inside = ref > 0.05
    assert np.corrcoef(mean[inside], ref[inside])[0, 1] > 0.85
    assert ((mean > -0.9) == inside).mean() > 0.95


def test_phantom_group_difference_direction(phantom_prepared: tuple[Path, Path]) -> None:
    _, out = phantom_prepared
    ds = load_prepared(out)
    doc = phantom_group_difference()
    imgs = np.asarray(ds.images)[:, 0]
    brain = (imgs > -1).mean(axis=0) > 0.5
    means = imgs[:, brain].mean(axis=1)
    eff = means[ds.labels == ds.classes.index(doc["effect_class"])]
    ref = means[ds.labels == ds.classes.index(doc["reference_class"])]
    assert np.sign(eff.mean() - ref.mean()) == doc["expected_sign"]
    assert eff.max() < ref.min()  # the documented effect separates the classes
