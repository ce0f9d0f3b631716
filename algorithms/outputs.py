"""The outputs of detector algorithms: the score raster, and an optional anomaly mask and anomaly polygons.

Any detector that writes a score raster adds the object parameters with `add_threshold_parameters`
and `add_object_destinations`, checks them in checkParameterValues with `check_object_parameters`
(the engine's request check), runs its detector with `detector_feedback`'s share of the progress,
and ends with `score_results`: the scores styled, then the mask and polygons thresholded with the
number of features (the chi-square degrees of freedom of the false-alarm-rate threshold), written
and styled. Nothing is written for the objects when neither the mask nor the polygons are asked for.
"""

import os
import uuid

from qgis.core import (
    QgsProcessing,
    QgsProcessingOutputLayerDefinition,
    QgsProcessingOutputNumber,
    QgsProcessingParameterEnum,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterVectorDestination,
    QgsProcessingUtils,
)

from ..fers_core.feedback import StageFeedback
from ..fers_core.io.windows import DEFAULT_BLOCK_MB
from ..fers_core.pipeline.objects import check_polygons_run, write_polygons
from ..fers_core.pipeline.postprocess import TIE_LIMIT, score_percentiles, threshold_value, write_mask
from ..fers_core.pipeline.requests import (
    ABSOLUTE,
    DEFAULT_MIN_PIXELS,
    DEFAULT_TOP_PERCENT,
    FALSE_ALARM_RATE,
    TOP_PERCENT,
    check_polygons_path,
    check_threshold,
)
from . import styles
from .base import static_destination

THRESHOLD_METHOD = "THRESHOLD_METHOD"
THRESHOLD = "THRESHOLD"
MIN_PIXELS = "MIN_PIXELS"
OUTPUT_MASK = "OUTPUT_MASK"
OUTPUT_POLYGONS = "OUTPUT_POLYGONS"
THRESHOLD_VALUE = "THRESHOLD_VALUE"
ANOMALY_PIXELS = "ANOMALY_PIXELS"
OBJECT_COUNT = "OBJECT_COUNT"
METHOD_LABELS = {
    TOP_PERCENT: "Top percent of valid pixels",
    ABSOLUTE: "Absolute score",
    FALSE_ALARM_RATE: "False-alarm rate in percent (chi-square background)",
}
METHOD_OPTIONS = tuple(METHOD_LABELS[method] for method in sorted(METHOD_LABELS))  # the enum index is the method
OBJECTS_START = 85  # the run's progress (percent) where the detector hands over to the mask and polygons
HELP = (
    "Anomaly mask and objects are written only when asked for: pixels with a score at or above the threshold are "
    "anomalies, and 8-connected anomaly pixels form one object. The defaults (the top 0.2% of the pixels, objects "
    "of at least 2 pixels) give a short list of objects to look at; lower the minimum size to 1 to keep "
    "single-pixel (sub-pixel) targets."
)
METHOD_HELP = (
    "How the threshold is read. Top percent: flag that percentage of the valid pixels with the highest scores "
    "(pixels tied at the cut are flagged too, unless that would flag more than ten times the pixels asked: then "
    "only those above it are, with a warning). Absolute score: the threshold is a score. False-alarm rate: the "
    "threshold is the percentage of background pixels expected above the cut if the background were Gaussian "
    "(RX scores then follow a chi-square law whose degrees of freedom are the covariance's rank, the band count for "
    "full-rank data); real backgrounds have heavier tails, so expect more pixels than that to be flagged."
)
FUSED_SCORES_NOTE = (
    " With the default (empty Model) or several models, each score is the mean of the models' rank percentiles, "
    "from 0 to 1: an absolute threshold is then a number in that range (such as 0.99; 50 flags nothing), Top "
    "percent flags a share of the pixels, and the false-alarm rate needs one model with sum fusion or one branch."
)


def add_threshold_parameters(algorithm, fused_scores=False):
    """THRESHOLD_METHOD, THRESHOLD and MIN_PIXELS; `fused_scores`: the algorithm's default scores are an ensemble's
    rank percentiles (fers:detect), which the method's help explains."""
    algorithm.add_parameter(QgsProcessingParameterEnum(
        THRESHOLD_METHOD, algorithm.tr("Threshold method"), list(METHOD_OPTIONS), defaultValue=TOP_PERCENT,
    ), METHOD_HELP + (FUSED_SCORES_NOTE if fused_scores else ""))
    algorithm.add_parameter(QgsProcessingParameterNumber(
        THRESHOLD, algorithm.tr("Threshold (percent of pixels, score, or false-alarm rate in percent)"),
        QgsProcessingParameterNumber.Type.Double, DEFAULT_TOP_PERCENT,
    ), f"The cut for the anomaly mask and objects, read as the threshold method says (default: the top "
       f"{DEFAULT_TOP_PERCENT:g}% of the valid pixels).")
    algorithm.add_parameter(QgsProcessingParameterNumber(
        MIN_PIXELS, algorithm.tr("Minimum object size (pixels)"), QgsProcessingParameterNumber.Type.Integer,
        DEFAULT_MIN_PIXELS, minValue=1,
    ), "Anomaly objects with fewer pixels are dropped from the objects layer (the mask keeps every pixel). "
       "1 keeps single-pixel targets, at the cost of many isolated background pixels.")


def add_object_destinations(algorithm):
    """OUTPUT_MASK and OUTPUT_POLYGONS (optional, off by default) and the numeric outputs."""
    algorithm.add_parameter(QgsProcessingParameterRasterDestination(
        OUTPUT_MASK, algorithm.tr("Anomaly mask"), optional=True, createByDefault=False,
    ), "Optional GeoTIFF: 1 = anomaly (score at or above the threshold), 0 = background, 255 = nodata.")
    polygons = QgsProcessingParameterVectorDestination(
        OUTPUT_POLYGONS, algorithm.tr("Anomaly objects"), QgsProcessing.SourceType.TypeVectorPolygon,
        optional=True, createByDefault=False,
    )
    polygons.setSupportsNonFileBasedOutput(False)
    algorithm.add_parameter(polygons, "Optional GeoPackage (.gpkg) of polygons, one per object of 8-connected "
                            "anomaly pixels, with id, pixels, area (map units), area_m2 (ground area in square "
                            "metres), max_score, mean_score, centroid_x and "
                            "centroid_y; objects smaller than the minimum object size are left out. An existing file "
                            "of that name is replaced, with all its layers.")
    algorithm.addOutput(QgsProcessingOutputNumber(THRESHOLD_VALUE, algorithm.tr("Score threshold used")))
    algorithm.addOutput(QgsProcessingOutputNumber(ANOMALY_PIXELS, algorithm.tr("Anomaly pixels in the mask")))
    algorithm.addOutput(QgsProcessingOutputNumber(OBJECT_COUNT, algorithm.tr("Number of anomaly objects")))


def _raw_destination(parameters, name):
    """The destination as given (a path, 'TEMPORARY_OUTPUT', ...) or None when skipped; no side effects.

    parameterAsOutputLayer registers the layer for loading and invents a new temporary path on
    every call, so it must run once per output, in compute, never in checkParameterValues.
    """
    value = static_destination(parameters.get(name))
    if isinstance(value, QgsProcessingOutputLayerDefinition):
        return "(an expression)"  # asked for: QGIS evaluates it when the output is made
    return str(value) if value not in (None, "") else None


def asked_for(parameters):
    """Whether the user asked for the mask or the polygons."""
    return _raw_destination(parameters, OUTPUT_MASK) is not None or \
        _raw_destination(parameters, OUTPUT_POLYGONS) is not None


def check_polygons_memory(parameters, source, feedback):
    """Before the detector runs: refuse polygons the machine lacks the memory for (they hold the whole mask)."""
    if _raw_destination(parameters, OUTPUT_POLYGONS) is not None:
        check_polygons_run(source, feedback)


def false_alarm_rate(algorithm, parameters, context):
    """Whether the mask or the polygons are asked for with a false-alarm-rate threshold (which needs scores with a
    chi-square law: the engine's request check says which have one)."""
    return asked_for(parameters) and \
        algorithm.parameterAsEnum(parameters, THRESHOLD_METHOD, context) == FALSE_ALARM_RATE


def check_object_parameters(algorithm, parameters, context):
    """InputError for a threshold its method cannot read, or polygons not going to a GeoPackage (the engine's
    checks, applied before the detection), when the mask or the polygons are asked for."""
    if not asked_for(parameters):
        return
    check_threshold(algorithm.parameterAsEnum(parameters, THRESHOLD_METHOD, context),
                    algorithm.parameterAsDouble(parameters, THRESHOLD, context))
    polygons = _raw_destination(parameters, OUTPUT_POLYGONS)
    if polygons and polygons != QgsProcessing.TEMPORARY_OUTPUT:  # QGIS names a temporary output .gpkg itself
        check_polygons_path(polygons)


def detector_feedback(parameters, feedback):
    """The detector's share of the run's progress: all of it, or up to OBJECTS_START when objects follow."""
    return StageFeedback(feedback, 0, OBJECTS_START if asked_for(parameters) else 100)


def score_results(algorithm, parameters, context, feedback, score_path, n_features):
    """A detector's results: OUTPUT (the scores), the mask and polygons asked for, each styled for loading.

    `feedback` is the engine Feedback of the whole run; the objects report progress from OBJECTS_START to 100.
    """
    results = {algorithm.OUTPUT: score_path}
    results.update(_object_outputs(algorithm, parameters, context, feedback, score_path, n_features))
    styles.style_scores(context, score_path)
    return results


def _object_outputs(algorithm, parameters, context, feedback, score_path, n_features):
    """Threshold the scores, write the requested mask and polygons, and style them; their results.

    When the run fails or is cancelled, the base class's RunGuard removes every output it wrote.
    """
    if not asked_for(parameters):
        return {}
    mask_path, polygons_path = (
        algorithm.parameterAsOutputLayer(parameters, name, context) or None if _raw_destination(parameters, name)
        else None for name in (OUTPUT_MASK, OUTPUT_POLYGONS)
    )
    method = algorithm.parameterAsEnum(parameters, THRESHOLD_METHOD, context)
    value = algorithm.parameterAsDouble(parameters, THRESHOLD, context)
    min_pixels = algorithm.parameterAsInt(parameters, MIN_PIXELS, context)
    block_mb = algorithm.parameterAsInt(parameters, "MEMORY_MB", context) \
        if algorithm.parameterDefinition("MEMORY_MB") else DEFAULT_BLOCK_MB
    start = OBJECTS_START
    span = 100 - start
    threshold = threshold_value(score_path, method, value, n_features, StageFeedback(feedback, start, start + span / 3),
                                block_mb)
    feedback.info(f"Threshold: {threshold.describe()}.")
    temporary_mask = None
    if not mask_path:
        temporary_mask = os.path.join(QgsProcessingUtils.tempFolder(), f"fers_mask_{uuid.uuid4().hex[:8]}.tif")
    try:
        mask = write_mask(score_path, mask_path or temporary_mask, threshold.value,
                          StageFeedback(feedback, start + span / 3, start + span * 2 / 3), block_mb)
        ties = mask.anomaly_pixels - (threshold.target_pixels or 0)
        if threshold.tied_out:
            feedback.warning(f"{threshold.tied_out} pixels share the score at the cut (a saturated or constant "
                             "area?): flagging them all would flag "
                             f"{100 * (threshold.tied_out + mask.anomaly_pixels) / threshold.valid_pixels:.3g}% of "
                             f"the valid pixels, so only the {mask.anomaly_pixels} above it are flagged. Choose an "
                             "absolute threshold to decide otherwise.")
        elif method == TOP_PERCENT and ties > TIE_LIMIT * threshold.target_pixels:  # tied at the highest score
            feedback.warning(f"{mask.anomaly_pixels} pixels share the highest score (a saturated or constant "
                             f"area?), so the mask flags them all: "
                             f"{100 * mask.anomaly_pixels / threshold.valid_pixels:.3g}% of the valid pixels "
                             f"instead of {threshold.parameter:g}%. Look at the scores, or choose an absolute "
                             "threshold.")
        elif method == TOP_PERCENT and ties > 0:
            feedback.info(f"{ties} more pixel(s) score exactly the threshold, so the mask flags "
                          f"{mask.anomaly_pixels} (every pixel at the cut is kept).")
        if method == ABSOLUTE and mask.anomaly_pixels + mask.background_pixels and \
                not (mask.anomaly_pixels and mask.background_pixels):
            low, high = score_percentiles(score_path, [0, 100])  # a sample's, on this warning's path only
            feedback.warning(f"{'No' if not mask.anomaly_pixels else 'Every'} valid pixel reaches the absolute "
                             f"threshold {threshold.value:.6g}; the scores range from {low:.6g} to {high:.6g}. "
                             "Choose a threshold inside that range, or the top-percent method.")
        results = {THRESHOLD_VALUE: threshold.value, ANOMALY_PIXELS: mask.anomaly_pixels}
        if mask_path:
            results[OUTPUT_MASK] = mask_path
            styles.style_mask(context, mask_path, score_path)
        if polygons_path:
            objects = write_polygons(mask.path, score_path, polygons_path, min_pixels,
                                     StageFeedback(feedback, start + span * 2 / 3, 100), block_mb)
            results[OUTPUT_POLYGONS] = polygons_path
            results[OBJECT_COUNT] = objects.objects
            styles.style_polygons(context, polygons_path, score_path)
    finally:
        if temporary_mask and os.path.isfile(temporary_mask):
            os.remove(temporary_mask)
    return results
