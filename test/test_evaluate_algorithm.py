"""fers:evaluate through processing.run: metrics on hand-made rasters, report, CSV, errors, real scenes."""

import csv

import numpy as np
import pytest
from qgis.core import QgsProcessingException

from .conftest import require_scenes
from .rasters import read, write_cube, write_polygons

NODATA = -9999.0


def hand_made(tmp_path):
    """100x100 pixels: 9989 background scores 1..9989 and 11 anomalies with chosen scores.

    Anomalies: 4 at 20000 (above everything), 3 at 9985.5, 2 at 9900.5, 2 at 0.5 (below everything).
    At most 0.1% false alarms = 9 background pixels (>= 9981): 7 of 11 anomalies found.
    At most 1% = 99 background pixels (>= 9891): 9 of 11.
    Best F1 at score >= 9985.5: TP 7, FP 4 (9986..9989), FN 4: F1 = 2 TP / (2 TP + FP + FN) = 14 / 22
    (8 / 15 at 20000, 18 / 109 at 9900.5).
    """
    rng = np.random.default_rng(0)
    anomalies = np.array([20000] * 4 + [9985.5] * 3 + [9900.5] * 2 + [0.5] * 2, dtype=np.float32)
    values = np.concatenate([np.arange(1, 9990, dtype=np.float32), anomalies])
    labels = np.concatenate([np.zeros(9989, np.uint8), np.ones(11, np.uint8)])
    order = rng.permutation(10000)
    scores, truth = values[order].reshape(100, 100), labels[order].reshape(100, 100)
    return (write_cube(tmp_path / "scores.tif", scores, nodata=NODATA), write_cube(tmp_path / "truth.tif", truth),
            scores, truth)


def run_evaluate(run_alg, tmp_path, scores, truth, **parameters):
    parameters = {"SCORES": scores if isinstance(scores, list) else [scores], "GROUND_TRUTH": truth,
                  "OUTPUT_HTML": str(tmp_path / "report.html"), **parameters}
    return run_alg("fers:evaluate", parameters)


def test_metrics_of_a_hand_made_score_raster(run_alg, tmp_path):
    from fers.fers_core.detectors.metrics import roc_auc

    score_path, truth_path, scores, truth = hand_made(tmp_path)
    result = run_evaluate(run_alg, tmp_path, score_path, truth_path, OUTPUT_CSV=str(tmp_path / "roc.csv"))
    assert result["AUC"] == roc_auc(scores, truth)  # exactly the project's AUC
    # by hand: anomalies above b background pixels count b; the 9985.5s beat 9985, the 9900.5s beat 9900
    expected_auc = (4 * 9989 + 3 * 9985 + 2 * 9900) / (11 * 9989)
    assert result["AUC"] == pytest.approx(expected_auc, abs=1e-12)
    assert result["DETECTION_RATE_0_1"] == pytest.approx(7 / 11)
    assert result["DETECTION_RATE_1"] == pytest.approx(9 / 11)
    assert result["BEST_F1"] == pytest.approx(14 / 22)
    assert result["BEST_F1_THRESHOLD"] == 9985.5
    assert result["OUTPUT_HTML"] == str(tmp_path / "report.html")

    with open(result["OUTPUT_CSV"], newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert rows[0]["threshold"] == "inf" and float(rows[0]["detection_rate"]) == 0
    assert float(rows[-1]["false_alarm_rate"]) == 1 and float(rows[-1]["detection_rate"]) == 1
    points = {float(r["threshold"]): (int(r["false_positives"]), int(r["true_positives"])) for r in rows[1:]}
    assert points[20000.0] == (0, 4) and points[9985.5] == (4, 7) and points[9900.5] == (89, 9)
    false_alarms = [float(r["false_alarm_rate"]) for r in rows]
    assert false_alarms == sorted(false_alarms)


def test_report_has_every_curve_and_distribution(run_alg, tmp_path):
    score_path, truth_path, scores, truth = hand_made(tmp_path)
    second = write_cube(tmp_path / "noisy.tif", scores + np.random.default_rng(1).normal(0, 3000, scores.shape)
                        .astype(np.float32), nodata=NODATA)
    result = run_evaluate(run_alg, tmp_path, [score_path, second], truth_path)
    page = open(result["OUTPUT_HTML"], encoding="utf-8").read()
    assert page.startswith("<!DOCTYPE html>") and "</html>" in page
    assert page.count("<polyline") == 2  # one ROC curve per score raster, on one plot
    assert page.count("<svg") == 3  # the ROC plot and one distribution plot per raster
    assert "scores" in page and "noisy" in page and "false-alarm rate (log scale)" in page
    assert f"{result['AUC']:.4f}" in page
    assert "http" not in page.replace("http://www.w3.org/2000/svg", "")  # self-contained


def test_nodata_scores_and_masked_pixels_are_left_out(run_alg, tmp_path):
    from fers.fers_core.detectors.metrics import roc_auc

    _, truth_path, scores, truth = hand_made(tmp_path)
    holes = scores.copy()
    holes[:10] = NODATA
    mask = np.zeros((100, 100), np.uint8)
    mask[50:60, :] = 1
    score_path = write_cube(tmp_path / "holes.tif", holes, nodata=NODATA)
    mask_path = write_cube(tmp_path / "mask.tif", mask)
    result = run_evaluate(run_alg, tmp_path, score_path, truth_path, MASK=mask_path)
    keep = (holes != NODATA) & (mask == 0)
    assert result["AUC"] == roc_auc(scores[keep], truth[keep])
    assert result["AUC"] != roc_auc(scores, truth)


def test_sizes_must_match(run_alg, tmp_path):
    score_path, truth_path, _, _ = hand_made(tmp_path)
    small = write_cube(tmp_path / "small.tif", np.zeros((50, 100), np.uint8))
    with pytest.raises(QgsProcessingException, match="is 100x100 pixels but the ground truth is 100x50"):
        run_evaluate(run_alg, tmp_path, score_path, small)
    with pytest.raises(QgsProcessingException, match="mask 'small.tif' is 100x50"):
        run_evaluate(run_alg, tmp_path, score_path, truth_path, MASK=small)
    assert not (tmp_path / "report.html").exists()


def test_a_vector_ground_truth_or_mask_is_refused_with_how_to_rasterise_it(run_alg, tmp_path):
    score_path, truth_path, _, _ = hand_made(tmp_path)  # 100x100 px of 10 m from (500000, 4100000)
    polygons = write_polygons(tmp_path / "targets.gpkg", [[(500100, 4099900), (500200, 4099900), (500200, 4099800),
                                                           (500100, 4099800)]])
    with pytest.raises(QgsProcessingException, match=r"^The ground truth 'targets.gpkg' is a vector file, but the "
                                                     r"ground truth must be a raster on the score raster's grid: .*"
                                                     r"-ts 100 100 -te 500000 4099000 501000 4100000 'targets.gpkg'"):
        run_evaluate(run_alg, tmp_path, score_path, polygons)
    with pytest.raises(QgsProcessingException, match=r"^The mask 'targets.gpkg' is a vector file, .* on the ground "
                                                     r"truth's grid"):
        run_evaluate(run_alg, tmp_path, score_path, truth_path, MASK=polygons)
    assert not (tmp_path / "report.html").exists()


def test_truth_without_anomalies_is_a_clear_error(run_alg, tmp_path):
    score_path, _, _, _ = hand_made(tmp_path)
    empty = write_cube(tmp_path / "empty.tif", np.zeros((100, 100), np.uint8))
    with pytest.raises(QgsProcessingException, match="no anomaly"):
        run_evaluate(run_alg, tmp_path, score_path, empty)


def test_truth_without_background_is_a_clear_error(run_alg, tmp_path):
    score_path, _, _, _ = hand_made(tmp_path)
    full = write_cube(tmp_path / "full.tif", np.full((100, 100), 255, np.uint8))
    with pytest.raises(QgsProcessingException, match=r"^The ground truth has no background \(zero\) pixel .* 0 must "
                                                     r"mark the background"):
        run_evaluate(run_alg, tmp_path, score_path, full)


@pytest.mark.slow
def test_real_scenes_auc_equals_a_direct_computation(run_alg, tmp_path):
    scenes = require_scenes()
    from fers.fers_core.detectors.metrics import roc_auc

    names = sorted(p.name[:-len("_gt.tif")] for p in scenes.glob("*_gt.tif"))
    assert len(names) >= 11
    for name in names:
        rx = run_alg("fers:rx", {"INPUT": str(scenes / f"{name}.tif"), "OUTPUT": str(tmp_path / f"{name}.tif")})
        truth = scenes / f"{name}_gt.tif"
        result = run_evaluate(run_alg, tmp_path, rx["OUTPUT"], str(truth), OUTPUT_HTML=str(tmp_path / f"{name}.html"))
        assert result["AUC"] == roc_auc(read(rx["OUTPUT"])[0], read(truth)[0]), name
        assert 0.8 < result["AUC"] <= 1 and 0 <= result["DETECTION_RATE_0_1"] <= result["DETECTION_RATE_1"] <= 1


def test_no_score_raster_is_refused(run_alg, tmp_path):
    """The engine's refusal (evaluation.evaluate) reaches the user as it is; the algorithm does not repeat it."""
    _, truth_path, _, _ = hand_made(tmp_path)
    with pytest.raises(QgsProcessingException, match="^No score raster was given: choose at least one score raster"):
        run_evaluate(run_alg, tmp_path, [], truth_path)
    assert not (tmp_path / "report.html").exists()


def test_float64_scores_are_ranked_in_their_own_precision(run_alg, tmp_path):
    """Scores 1e7 + u: in float32 they collapse onto a few values, and the ties would give another AUC."""
    from fers.fers_core.detectors.metrics import roc_auc

    rng = np.random.default_rng(0)
    truth = np.zeros((40, 40), np.uint8)
    truth[10:13, 10:13] = 1
    scores = 1e7 + rng.uniform(0, 1, (40, 40)) + 0.5 * truth
    score_path = write_cube(tmp_path / "scores.tif", scores)
    result = run_evaluate(run_alg, tmp_path, score_path, write_cube(tmp_path / "truth.tif", truth))
    assert result["AUC"] == roc_auc(scores.ravel(), truth.ravel())
    assert result["AUC"] != roc_auc(scores.astype(np.float32).ravel(), truth.ravel())


@pytest.mark.parametrize("declared, match", [
    (0, r"^The ground truth 'truth.tif' has no background \(zero\) pixel left to evaluate: its nodata value is 0, so "
        r"its 9989 pixels of that value are left out\. If 0 marks the background, unset the nodata value "
        r"\(gdal_edit.py -unsetnodata 'truth.tif'"),
    (1, r"^The ground truth 'truth.tif' has no anomaly \(non-zero\) pixel left to evaluate: its nodata value is 1, "
        r"so its 11 pixels .* If 1 marks anomalies, unset"),
])
def test_a_truth_whose_nodata_hides_a_class_says_so(run_alg, tmp_path, declared, match):
    score_path, _, _, truth = hand_made(tmp_path)
    truth_path = write_cube(tmp_path / "truth.tif", truth, nodata=declared)
    with pytest.raises(QgsProcessingException, match=match):
        run_evaluate(run_alg, tmp_path, score_path, truth_path)
    blank = write_cube(tmp_path / "blank.tif", np.full((100, 100), 7, np.uint8), nodata=7)
    with pytest.raises(QgsProcessingException, match=r"^The ground truth 'blank.tif' holds no valid pixel: its "
                                                     r"nodata value is 7; if that value marks the anomalies or the "
                                                     r"background, unset the nodata value \(gdal_edit.py"):
        run_evaluate(run_alg, tmp_path, score_path, blank)
    nan = write_cube(tmp_path / "nan.tif", np.full((100, 100), np.nan, np.float32))
    with pytest.raises(QgsProcessingException, match=r"^The ground truth 'nan.tif' holds no valid pixel: every pixel "
                                                     r"is NaN, infinite or a fill value\.$"):
        run_evaluate(run_alg, tmp_path, score_path, nan)
    assert not (tmp_path / "report.html").exists()


def test_a_class_the_mask_leaves_out_is_not_blamed_on_the_truth_s_nodata(run_alg, tmp_path):
    score_path, _, _, truth = hand_made(tmp_path)
    framed = truth.copy()
    framed[:, :5] = 255  # outside the survey: the truth's nodata
    framed[framed == 1] = 0
    framed[50, 50] = 1  # the only anomaly, which the mask excludes
    mask = np.zeros((100, 100), np.uint8)
    mask[50, 50] = 1
    with pytest.raises(QgsProcessingException, match=r"^The mask leaves out all 1 anomaly \(non-zero\) pixels of "
                                                     r"the ground truth 'framed.tif', so none is left to evaluate"):
        run_evaluate(run_alg, tmp_path, score_path, write_cube(tmp_path / "framed.tif", framed, nodata=255),
                     MASK=write_cube(tmp_path / "mask.tif", mask))


def test_the_same_file_twice_is_refused(run_alg, tmp_path):
    score_path, truth_path, _, _ = hand_made(tmp_path)
    with pytest.raises(QgsProcessingException, match=r"^Score raster 1 and score raster 2 are the same file .*give "
                                                     "each score raster once"):
        run_evaluate(run_alg, tmp_path, [score_path, str(tmp_path / "." / "scores.tif")], truth_path)
    with pytest.raises(QgsProcessingException, match=r"^Score raster 1 and the ground truth are the same file"):
        run_evaluate(run_alg, tmp_path, truth_path, truth_path)
    assert not (tmp_path / "report.html").exists()


def test_score_rasters_of_one_name_get_their_folder_and_a_cube_is_named(run_alg, tmp_path):
    from .conftest import Recorder

    score_path, truth_path, scores, _ = hand_made(tmp_path)
    (tmp_path / "other").mkdir()
    other = write_cube(tmp_path / "other" / "scores.tif", np.stack([scores[::-1], scores]))
    feedback = Recorder()
    run_alg("fers:evaluate", {"SCORES": [score_path, other], "GROUND_TRUTH": truth_path,
                              "OUTPUT_HTML": str(tmp_path / "report.html"), "OUTPUT_CSV": str(tmp_path / "curves.csv")},
            feedback)
    with open(tmp_path / "curves.csv", newline="") as stream:
        names = {row["raster"] for row in csv.DictReader(stream)}
    assert names == {f"{tmp_path.name}/scores", "other/scores"}
    assert feedback.warnings == ["The score raster 'scores.tif' has 2 bands: only band 1 is used (a score raster or "
                                 "mask has one band; choose the detector's output, not its input)."]
