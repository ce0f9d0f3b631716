"""Parity with the FERS authors' code: imported checkpoints must reproduce their numbers.

Needs ``shared/`` beside the project root (reference checkpoints, parity fixtures and scenes);
skips when it is absent.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import rankdata

from fers.fers_core.enhance.checkpoints import import_authors_checkpoint
from fers.fers_core.enhance.features import compute_features
from fers.fers_core.pipeline.preprocess import resample_bands, scale_reference

SHARED = Path(__file__).resolve().parents[3] / ".." / "shared"
REFERENCE = SHARED / "reference"
SCENES = SHARED / "data" / "scenes"
EXPECTED = REFERENCE / "parity" / "expected.json"
SKIP_REASON = "the shared reference data (../shared/reference, ../shared/data) is absent beside the project"


def parity_entries():
    if not EXPECTED.is_file():
        return [pytest.param(None, id="no-shared-data")]
    entries = json.loads(EXPECTED.read_text())
    return [pytest.param(entry, id=f"{entry['scene']}-{entry['checkpoint']}") for entry in entries]


def read_raster(path):
    gdal = pytest.importorskip("osgeo.gdal")
    dataset = gdal.Open(str(path))
    assert dataset is not None, f"GDAL cannot open {path}"
    return dataset.ReadAsArray().astype(np.float64)


def global_rx(cube):
    """Mahalanobis distance of each pixel to the image mean (pseudo-inverse of the covariance)."""
    pixels = cube.reshape(cube.shape[0], -1).astype(np.float64)
    centred = pixels - pixels.mean(axis=1, keepdims=True)
    covariance = centred @ centred.T / (pixels.shape[1] - 1)
    return np.einsum("in,ij,jn->n", centred, np.linalg.pinv(covariance), centred)


def roc_auc(scores, labels):
    """Area under the ROC curve from ranks (ties get their average rank)."""
    labels = labels.ravel()
    ranks = rankdata(scores.ravel())
    positives = labels.sum()
    negatives = labels.size - positives
    return (ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives)


def model_input(entry):
    """The scene, band-selected as the reference did, scaled with the whole cube's min and max."""
    cube = read_raster(SCENES / f"{entry['scene']}.tif")
    bands = entry["model_bands"]
    if entry["bands_used"] == "first":
        cube = cube[:bands]
    else:
        cube = resample_bands(cube, bands)
    return scale_reference(cube, cube.min(), cube.max())


@pytest.mark.slow
@pytest.mark.parametrize("entry", parity_entries())
def test_imported_checkpoint_reproduces_reference(entry):
    if entry is None or not SCENES.is_dir():
        pytest.skip(SKIP_REASON)
    model = import_authors_checkpoint(REFERENCE / "fers-checkpoints" / entry["checkpoint"])
    assert model.bands == entry["model_bands"]
    x = model_input(entry)
    feature = compute_features(model, x, ["spectral"])["spectral"]

    reference_crop = np.load(REFERENCE / "parity" / entry["feature_crop_file"])
    np.testing.assert_allclose(
        feature[:, 32:64, 32:64], reference_crop, rtol=1e-4, atol=1e-4 * np.abs(reference_crop).max()
    )
    assert feature.mean() == pytest.approx(entry["feature_mean_full"], rel=1e-4)
    assert feature.max() == pytest.approx(entry["feature_max_full"], rel=1e-4)

    labels = read_raster(SCENES / f"{entry['scene']}_gt.tif") != 0
    assert round(roc_auc(global_rx(x), labels), 4) == pytest.approx(entry["auc_rx_input"], abs=6e-5)
    assert round(roc_auc(global_rx(x + feature), labels), 4) == pytest.approx(
        entry["auc_rx_input_plus_spectral"], abs=6e-5
    )
