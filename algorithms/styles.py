"""Styles for FERS outputs loaded into QGIS: scores, anomaly masks and anomaly polygons.

Applied through QgsProcessingLayerPostProcessorInterface when the output will be loaded on
completion (context.willLoadLayerOnCompletion). QGIS keeps only a C++ pointer to a
post-processor, so a Python reference to each one is kept here (otherwise Python frees it
before QGIS calls it and QGIS crashes or silently skips the style).

Scores get the Magma colour ramp stretched from the 2nd to the 99.5th percentile of the valid
scores: the background keeps visible texture (dark purple to red), and the top half percent,
where anomalies are, is pale yellow. Compared on hydice-urban-162 (global and local RX): a 2-98%
stretch makes the whole background busy and saturates 2% of the pixels in one colour; 50-99.9%
turns most of the image black and leaves small anomalies as faint dots. Rank-fused ensemble maps
(the default) are percentiles, uniform over the background, so a linear stretch paints the whole
scene as noise; they get the same ramp on a log scale of the exceedance 1 - p instead (RANK_STOPS):
the lower half of the pixels near black, the top 10 % purple, the top 1 % red, the top 0.1 % orange
and the top 0.01 % pale yellow, which looks like an RX map's tail. The mask is cyan and the
object outlines green, hues the Magma ramp never takes, so neither is mistaken for a score.

Loaded outputs are stacked objects, mask, scores from the top, so the opaque scores never hide
the others: each post-processor moves its layer next to the layers of the same run already in the
layer tree (QGIS 3.22 loads them in the order of their paths and has no sort key; on QGIS 3.32+
the context's layerSortKey gives the same order).
"""

from qgis.core import (
    QgsColorRampShader,
    QgsFillSymbol,
    QgsGradientColorRamp,
    QgsGradientStop,
    QgsLayerTree,
    QgsPalettedRasterRenderer,
    QgsProcessingLayerPostProcessorInterface,
    QgsRasterLayer,
    QgsRasterMinMaxOrigin,
    QgsRasterShader,
    QgsSingleBandPseudoColorRenderer,
    QgsSingleSymbolRenderer,
    QgsVectorLayer,
)
from qgis.PyQt.QtGui import QColor

from ..fers_core.pipeline.postprocess import is_rank_map, score_percentiles

SCORE_PERCENTILES = (2.0, 99.5)
RANK_DECADES = 4
"""Rank maps: the Magma stop i of n sits at p = 1 - 10^(-RANK_DECADES * i / n), so the ramp spans p from 0 to 0.9999."""
MASK_COLOUR = QColor(0, 229, 255)  # cyan
OUTLINE_COLOUR = QColor(0, 230, 118)  # green
OBJECTS, MASK, SCORES, CUBES = 1, 2, 3, 4  # stacking rank of the outputs of one run, top first
RANK_PROPERTY, RUN_PROPERTY = "fers/stack_rank", "fers/run"
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
    renderer = _fixed_range_renderer(layer, low, high)
    renderer.createShader(magma_ramp(), QgsColorRampShader.Type.Interpolated,
                          QgsColorRampShader.ClassificationMode.Continuous, 0)
    return renderer


def _fixed_range_renderer(layer, low, high):
    """A single-band pseudocolour renderer on band 1 whose range stays low..high (QGIS never re-stretches it)."""
    renderer = QgsSingleBandPseudoColorRenderer(layer.dataProvider(), 1)
    renderer.setClassificationMin(low)
    renderer.setClassificationMax(high)
    origin = renderer.minMaxOrigin()
    origin.setLimits(QgsRasterMinMaxOrigin.Limits.None_)
    renderer.setMinMaxOrigin(origin)
    return renderer


def rank_stops():
    """(p, colour) of every Magma stop for a rank map (RANK_DECADES decades of exceedance)."""
    last = len(MAGMA) - 1
    return [(1.0 - 10.0 ** (-RANK_DECADES * i / last), QColor(colour)) for i, colour in enumerate(MAGMA)]


def rank_renderer(layer):
    """A pseudocolour renderer for a rank map: Magma on a log scale of the exceedance (rank_stops)."""
    stops = rank_stops()
    renderer = _fixed_range_renderer(layer, 0.0, stops[-1][0])
    shader = QgsColorRampShader(0.0, 1.0)
    shader.setColorRampType(QgsColorRampShader.Type.Interpolated)
    shader.setColorRampItemList([QgsColorRampShader.ColorRampItem(p, colour, f"top {100 * (1 - p):.2g} %")
                                 for p, colour in stops])
    raster_shader = QgsRasterShader(0.0, 1.0)
    raster_shader.setRasterShaderFunction(shader)
    renderer.setShader(raster_shader)
    return renderer


def mask_renderer(layer):
    """Anomalies (1) cyan, background (0) transparent; nodata (255) is transparent anyway."""
    classes = [
        QgsPalettedRasterRenderer.Class(0, QColor(0, 0, 0, 0), "background"),
        QgsPalettedRasterRenderer.Class(1, MASK_COLOUR, "anomaly"),
    ]
    return QgsPalettedRasterRenderer(layer.dataProvider(), 1, classes)


def polygon_renderer():
    """Green outline, no fill."""
    colour = OUTLINE_COLOUR
    symbol = QgsFillSymbol.createSimple({
        "style": "no", "outline_color": f"{colour.red()},{colour.green()},{colour.blue()},255",
        "outline_width": "0.6", "outline_width_unit": "MM",
    })
    return QgsSingleSymbolRenderer(symbol)


def _rank(node):
    layer = node.layer() if QgsLayerTree.isLayer(node) else None
    return None if layer is None else layer.customProperty(RANK_PROPERTY)


def place_in_stack(layer, run, rank):
    """Move a loaded layer among the loaded layers of the same run so that lower ranks are above it.

    Called for each output as it is loaded, whatever the order: the layers of one run already in
    its layer tree group are always in rank order, and this layer goes just above the first of
    them with a higher rank (or just below the last with a lower one). Other layers keep their place.
    """
    layer.setCustomProperty(RUN_PROPERTY, run)
    layer.setCustomProperty(RANK_PROPERTY, rank)
    project = layer.project()
    node = project.layerTreeRoot().findLayer(layer.id()) if project is not None else None
    if node is None or node.parent() is None:
        return
    parent = node.parent()
    children = parent.children()
    here = next(i for i, child in enumerate(children) if QgsLayerTree.isLayer(child) and child.layerId() == layer.id())
    same_run = [(i, int(_rank(child))) for i, child in enumerate(children) if i != here and _rank(child) is not None
                and child.layer().customProperty(RUN_PROPERTY) == run]
    below = [i for i, other in same_run if other > rank]
    above = [i for i, other in same_run if other <= rank]
    if below:
        target = min(below)
    elif above:
        target = max(above) + 1
    else:
        return
    if all(i < here for i in above) and all(i > here for i in below):
        return
    parent.insertChildNode(target, node.clone())  # the clone first: a layer left without a node is removed
    parent.removeChildNode(node)


class OutputStyle(QgsProcessingLayerPostProcessorInterface):
    """Sets a loaded output's renderer (when `renderer(layer)` gives one) and its place in the layer stack.

    `run` groups the outputs of one run (the path of its score raster); `rank` is OBJECTS, MASK or SCORES.
    """

    layer_type = QgsRasterLayer

    def __init__(self, run, rank):
        super().__init__()
        self.run, self.rank = run, rank

    def renderer(self, layer):
        return None

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802 (QGIS API)
        if not isinstance(layer, self.layer_type):
            return
        renderer = self.renderer(layer)
        if renderer is not None:
            layer.setRenderer(renderer)
            layer.triggerRepaint()
        place_in_stack(layer, self.run, self.rank)


class ScoreStyle(OutputStyle):
    def __init__(self, run, limits, rank_map=False):
        super().__init__(run, SCORES)
        self.limits, self.rank_map = limits, rank_map

    def renderer(self, layer):
        if self.rank_map:
            return rank_renderer(layer)
        return None if self.limits is None else score_renderer(layer, *self.limits)


class MaskStyle(OutputStyle):
    def renderer(self, layer):
        return mask_renderer(layer)


class PolygonStyle(OutputStyle):
    layer_type = QgsVectorLayer

    def renderer(self, layer):
        return polygon_renderer()


def _attach(context, path, processor):
    if not path or not context.willLoadLayerOnCompletion(path):
        return None
    _post_processors[path] = processor
    details = context.layerToLoadOnCompletionDetails(path)
    details.setPostProcessor(processor)
    if hasattr(details, "layerSortKey"):  # QGIS 3.32+: loads the layers in this order (lowest on top)
        details.layerSortKey = processor.rank
    return processor


def style_scores(context, path):
    """Style a score raster that will be loaded: Magma between the SCORE_PERCENTILES of its valid scores, or on
    the exceedance scale for a rank map."""
    if not path or not context.willLoadLayerOnCompletion(path):
        return None
    if is_rank_map(path):
        return _attach(context, path, ScoreStyle(str(path), None, rank_map=True))
    return _attach(context, path, ScoreStyle(str(path), score_percentiles(path, SCORE_PERCENTILES)))


def style_mask(context, path, score_path):
    """Style an anomaly mask that will be loaded, stacked above the scores of `score_path`."""
    return _attach(context, path, MaskStyle(str(score_path), MASK))


def style_polygons(context, path, score_path):
    """Style anomaly polygons that will be loaded, stacked above the mask and the scores of `score_path`."""
    return _attach(context, path, PolygonStyle(str(score_path), OBJECTS))


def stack_cube(context, path, score_path):
    """Stack an enhanced cube that will be loaded below the scores of `score_path` (QGIS's default style)."""
    return _attach(context, path, OutputStyle(str(score_path), CUBES))
