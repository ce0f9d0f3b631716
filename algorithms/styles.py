"""Styles for FERS outputs loaded into QGIS: scores, anomaly masks and anomaly polygons.

Applied through QgsProcessingLayerPostProcessorInterface when the output will be loaded on
completion (context.willLoadLayerOnCompletion). QGIS keeps only a C++ pointer to a
post-processor, so a Python reference to each one is kept here (otherwise Python frees it
before QGIS calls it and QGIS crashes or silently skips the style).

Scores get the Magma colour ramp stretched from the 2nd to the 99.5th percentile of the valid
scores: the background keeps visible texture (dark purple to red), and the top half percent,
where anomalies are, is pale yellow. Compared on hydice-urban-162 (global and local RX): a 2-98%
stretch makes the whole background busy and saturates 2% of the pixels in one colour; 50-99.9%
turns most of the image black and leaves small anomalies as faint dots.
"""

from qgis.core import (
    QgsColorRampShader,
    QgsFillSymbol,
    QgsGradientColorRamp,
    QgsGradientStop,
    QgsPalettedRasterRenderer,
    QgsProcessingLayerPostProcessorInterface,
    QgsRasterLayer,
    QgsRasterMinMaxOrigin,
    QgsSingleBandPseudoColorRenderer,
    QgsSingleSymbolRenderer,
    QgsVectorLayer,
)
from qgis.PyQt.QtGui import QColor

from ..fers_core.postprocess import score_percentiles

SCORE_PERCENTILES = (2.0, 99.5)
ANOMALY_COLOUR = QColor(230, 20, 20)
# matplotlib's Magma, sampled every tenth
MAGMA = ("#000004", "#140e36", "#3b0f70", "#641a80", "#8c2981", "#b73779", "#de4968", "#f7705c", "#fe9f6d",
         "#fecf92", "#fcfdbf")

_post_processors = {}  # output path -> post-processor: keeps them alive until QGIS has called them


def magma_ramp():
    """The Magma colour ramp as a QgsGradientColorRamp (no dependency on the user's style database)."""
    stops = [QgsGradientStop(i / (len(MAGMA) - 1), QColor(c)) for i, c in enumerate(MAGMA[1:-1], start=1)]
    return QgsGradientColorRamp(QColor(MAGMA[0]), QColor(MAGMA[-1]), False, stops)


def score_renderer(layer, low, high):
    """A single-band pseudocolour renderer with the Magma ramp stretched from low to high."""
    if not high > low:
        high = low + max(abs(low) * 1e-6, 1e-6)
    renderer = QgsSingleBandPseudoColorRenderer(layer.dataProvider(), 1)
    renderer.setClassificationMin(low)
    renderer.setClassificationMax(high)
    renderer.createShader(magma_ramp(), QgsColorRampShader.Interpolated, QgsColorRampShader.Continuous, 0)
    origin = renderer.minMaxOrigin()
    origin.setLimits(QgsRasterMinMaxOrigin.None_)
    renderer.setMinMaxOrigin(origin)
    return renderer


def mask_renderer(layer):
    """Anomalies (1) red, background (0) transparent; nodata (255) is transparent anyway."""
    classes = [
        QgsPalettedRasterRenderer.Class(0, QColor(0, 0, 0, 0), "background"),
        QgsPalettedRasterRenderer.Class(1, ANOMALY_COLOUR, "anomaly"),
    ]
    return QgsPalettedRasterRenderer(layer.dataProvider(), 1, classes)


def polygon_renderer():
    """Red outline, no fill."""
    symbol = QgsFillSymbol.createSimple({
        "style": "no", "outline_color": "230,20,20,255", "outline_width": "0.6", "outline_width_unit": "MM",
    })
    return QgsSingleSymbolRenderer(symbol)


class ScoreStyle(QgsProcessingLayerPostProcessorInterface):
    def __init__(self, low, high):
        super().__init__()
        self.low, self.high = low, high

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802 (QGIS API)
        if isinstance(layer, QgsRasterLayer):
            layer.setRenderer(score_renderer(layer, self.low, self.high))
            layer.triggerRepaint()


class MaskStyle(QgsProcessingLayerPostProcessorInterface):
    def postProcessLayer(self, layer, context, feedback):  # noqa: N802 (QGIS API)
        if isinstance(layer, QgsRasterLayer):
            layer.setRenderer(mask_renderer(layer))
            layer.triggerRepaint()


class PolygonStyle(QgsProcessingLayerPostProcessorInterface):
    def postProcessLayer(self, layer, context, feedback):  # noqa: N802 (QGIS API)
        if isinstance(layer, QgsVectorLayer):
            layer.setRenderer(polygon_renderer())
            layer.triggerRepaint()


def _attach(context, path, processor):
    if not path or not context.willLoadLayerOnCompletion(path):
        return None
    _post_processors[path] = processor
    context.layerToLoadOnCompletionDetails(path).setPostProcessor(processor)
    return processor


def style_scores(context, path):
    """Style a score raster that will be loaded: Magma between the SCORE_PERCENTILES of its valid scores."""
    if not path or not context.willLoadLayerOnCompletion(path):
        return None
    limits = score_percentiles(path, SCORE_PERCENTILES)
    if limits is None:
        return None
    return _attach(context, path, ScoreStyle(*limits))


def style_mask(context, path):
    return _attach(context, path, MaskStyle())


def style_polygons(context, path):
    return _attach(context, path, PolygonStyle())
