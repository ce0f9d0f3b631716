"""Shared plumbing for FERS algorithms: feedback adapter, error translation, the request check before a run, and
presentation (help, icons)."""

import difflib
import html
import math
import os
import traceback

from qgis.core import (
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingOutputLayerDefinition,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProperty,
    QgsRasterLayer,
)
from qgis.PyQt.QtCore import QVariant

from ..fers_core.errors import FersError, InputError
from ..fers_core.feedback import Feedback
from ..fers_core.io.band_list import parse_band_list
from ..fers_core.io.gdal_cache import bounded_gdal_cache
from ..fers_core.io.output_formats import check_outputs_keep_placement, check_raster_outputs
from ..fers_core.io.output_safety import check_outputs
from ..fers_core.io.reader import is_raster_source, nodata_values
from ..fers_core.runtime.run_guard import Interrupted, RunGuard
from .help_links import PLUGIN_DIR, help_address


class QgisFeedback(Feedback):
    """Adapts QgsProcessingFeedback to the engine's Feedback interface."""

    def __init__(self, feedback):
        self._feedback = feedback

    def set_progress(self, percent):
        if self._feedback is not None:
            self._feedback.setProgress(percent)

    def is_cancelled(self):
        return self._feedback is not None and self._feedback.isCanceled()

    def info(self, message):
        if self._feedback is not None:
            self._feedback.pushInfo(message)

    def warning(self, message):
        if self._feedback is None:
            return
        if hasattr(self._feedback, "pushWarning"):
            self._feedback.pushWarning(message)
        else:
            self._feedback.reportError(message, fatalError=False)


BAD_BANDS_HELP = ("Empty = every band the raster's metadata does not mark bad (ENVI bbl = 0, as AVIRIS products and "
                  "EnMAP-Box files carry it); a listed band is used even when marked. A band without any valid "
                  "value is named in the error, with the band list that leaves it out.")


INPUT_NODATA = "INPUT_NODATA"
INPUT_NODATA_HELP = ("A value that marks missing pixels in the input (e.g. a collar of 0 or -9999 around the swath "
                     "that the file does not declare), compared with the stored values. Pixels holding it in any used "
                     "band are left out and written as nodata, besides the raster's own nodata and any additional "
                     "nodata value set in the layer's properties (Transparency), which is honoured too. Empty = none.")


def input_nodata_parameter(description="Input nodata value (besides the raster's own)"):
    """The optional, advanced INPUT_NODATA parameter (an extra nodata value for every band of the input)."""

    return advanced(QgsProcessingParameterNumber(INPUT_NODATA, description,
                                                 QgsProcessingParameterNumber.Type.Double, optional=True))


def layer_nodata(layer, feedback=None):
    """The additional nodata values a QGIS raster layer's properties set (Transparency) for every band, as stored
    values (QGIS compares them after the band's scale and offset; the reader before), sorted. What cannot be
    honoured is named in a warning: ranges, values set for some bands only, and values on bands of different
    scales or offsets."""
    provider = layer.dataProvider()
    bands = range(1, provider.bandCount() + 1)
    per_band = [{(item.min(), item.max()) for item in provider.userNoDataValues(band)} for band in bands]
    common = set.intersection(*per_band) if per_band else set()
    ranges = sorted(item for item in set().union(*per_band) if item[0] != item[1])
    partial = sorted(item for item in set().union(*per_band) - common if item[0] == item[1])
    scaling = {(provider.bandScale(band), provider.bandOffset(band)) for band in bands}
    problems = [f"the range{'s' if len(ranges) > 1 else ''} " + ", ".join(f"{a:g} to {b:g}" for a, b in ranges)
                + " (only single values are)"] if ranges else []
    if partial:
        problems.append(", ".join(f"{a:g}" for a, _ in partial) + ", set for some bands only")
    values = sorted(a for a, b in common if a == b)
    if values and len(scaling) > 1:
        problems.append(", ".join(f"{v:g}" for v in values) + ", on bands of different scales or offsets")
        values = []
    if problems and feedback is not None:
        feedback.warning("Of the layer's additional nodata values (Transparency), " + "; ".join(problems) +
                         " cannot be honoured: set the input nodata value (in the raster's stored values) instead.")
    scale, offset = next(iter(scaling), (1.0, 0.0))
    return [(value - offset) / (scale or 1.0) for value in values]


def widget_value(value):
    """A parameter value as Python sees it: None for a null QVariant, else the value itself.

    Under PyQt5 an empty widget (file, folder, string) hands over a null QVariant, which is neither
    None nor a str; a custom checkValueIsAcceptable must read it as "no value". Anything else (a
    path, a layer, a QgsProperty from a model or a batch expression) is returned unchanged.
    """
    if isinstance(value, QVariant):
        return None if value.isNull() else value.value()
    return value


ICONS_DIR = os.path.join(PLUGIN_DIR, "icons")


def advanced(parameter):
    """`parameter`, shown in the dialog's Advanced section (expert settings the defaults serve well)."""
    parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.Flag.FlagAdvanced)
    return parameter


def is_advanced(parameter):
    return bool(parameter.flags() & QgsProcessingParameterDefinition.Flag.FlagAdvanced)


def _default_note(parameter, help_text):
    """' (default N)' for a number parameter with a default that its help does not state, else ''."""
    if not isinstance(parameter, QgsProcessingParameterNumber) or "default" in help_text.lower():
        return ""
    default = parameter.defaultValue()
    if default is None or isinstance(default, str) or (isinstance(default, float) and math.isnan(default)):
        return ""
    return f" (default {default:g})"


_NOT_FILE_PROVIDERS = {
    "virtualraster": "an on-the-fly raster calculator layer",
    "wms": "a web map or tile service",
    "wcs": "a web coverage service",
    "arcgismapserver": "an ArcGIS map service",
    "postgresraster": "a PostGIS raster",
}


def layer_file(layer):
    """The file (or GDAL dataset name) a raster layer reads; InputError, with what to do, for a layer that QGIS
    serves from something other than GDAL (a raster calculator's on-the-fly layer, a web service, a database)."""
    provider = layer.providerType()
    if provider != "gdal":
        what = _NOT_FILE_PROVIDERS.get(provider, "not a file GDAL reads")
        raise InputError(f"The layer '{layer.name()}' comes from QGIS's '{provider}' data provider ({what}), which "
                         "FERS cannot open (it reads files through GDAL): save it to a file first (right-click the "
                         "layer > Export > Save As..., as a GeoTIFF with every band) and run on that file.")
    return layer.source().split("|")[0]


def rejection_reason(definition, value, context):
    """Why QGIS refuses `value` for the parameter `definition`, in a sentence naming it ('' when unknown): a
    missing required value, a number out of its range or not a number, a listed file that does not exist."""
    from qgis.core import QgsProcessingParameterNumber, QgsProcessingUtils, QgsProperty

    name = f"{definition.description()} ({definition.name()})"
    if isinstance(value, QgsProperty):
        return ""
    if value is None or value == "" or value == []:
        return f"{name} is required: give a value."
    if isinstance(definition, QgsProcessingParameterNumber):
        try:
            number = float(value)
        except (TypeError, ValueError):
            return f"{name}: '{value}' is not a number."
        if number != number or number in (float("inf"), float("-inf")):
            return f"{name} must be a finite number (got {number:g})."
        low, high = definition.minimum(), definition.maximum()
        if number < low:
            return f"{name} must be at least {low:g} (got {number:g})."
        if number > high:
            return f"{name} must be at most {high:g} (got {number:g})."
        if definition.dataType() == QgsProcessingParameterNumber.Type.Integer and not number.is_integer():
            return f"{name} must be a whole number (got {number:g})."
        return ""
    if definition.type() in ("multilayer", "raster", "file"):
        for item in _list_items(value) if definition.type() == "multilayer" else [value]:
            if not isinstance(item, str) or is_raster_source(item) or os.path.exists(item):
                continue
            if QgsProcessingUtils.mapLayerFromString(item, context, False) is None:
                broken = _broken_project_layer(item, context)
                if broken is not None:
                    return (f"{name}: the project's layer '{broken.name()}' cannot be read: its source "
                            f"'{broken.source().split('|')[0]}' is missing or unreadable. Repair it (Layer Properties "
                            "> Source, or Repair Data Source) or choose another layer.")
                return f"{name}: '{item}' is neither an existing file nor a layer of the project; check the path."
    return ""


def _broken_project_layer(item, context):
    """The project layer with the id or name `item` whose data QGIS cannot read (a moved or deleted file), or None."""
    project = context.project() if context is not None else None
    if project is None:
        return None
    layer = project.mapLayer(item)
    candidates = [layer] if layer is not None else project.mapLayersByName(item)
    return next((found for found in candidates if not found.isValid()), None)


def _non_finite(value):
    """Whether `value` reads as NaN or an infinity."""
    try:
        return not math.isfinite(float(value))
    except ValueError:
        return False


def _allocation_failed(error):
    """Whether a RuntimeError is PyTorch's report of memory it could not allocate (CPU or GPU)."""
    text = str(error).lower()
    return "out of memory" in text or "can't allocate memory" in text or "tried to allocate" in text


def static_destination(value):
    """A destination parameter's value as given: the static sink value of a QgsProcessingOutputLayerDefinition
    (the batch dialog hands a skipped output over as one with an empty sink), else the value itself; a definition
    whose sink is an expression comes back unchanged (QGIS evaluates it when the output is made)."""
    if isinstance(value, QgsProcessingOutputLayerDefinition) and \
            value.sink.propertyType() == QgsProperty.Type.StaticProperty:
        return value.sink.staticValue()
    return value


def _destination_path(definition, value):
    """The file a destination parameter names, or None (skipped, a temporary output, a database, an expression)."""
    value = static_destination(value)
    if not isinstance(value, str) or not value.strip() or value == QgsProcessing.TEMPORARY_OUTPUT or \
            value.lower() == "skip" or value.startswith(("memory:", "ogr:", "postgres:", "postgis:")):
        return None
    if not os.path.splitext(value)[1] and hasattr(definition, "defaultFileExtension") and not os.path.isdir(value):
        extension = definition.defaultFileExtension()  # QGIS adds it to a name without one
        value = f"{value}.{extension}" if extension else value
    return value


def _input_path(definition, value, context):
    """The file or folder an input parameter's value names, or None."""
    from qgis.core import QgsMapLayer, QgsProcessingUtils

    if isinstance(value, QgsMapLayer):
        return value.source().split("|")[0]
    if not isinstance(value, str) or not value:
        return None
    if os.path.exists(value):
        return value
    if definition.type() in ("raster", "multilayer", "vector", "source", "layer"):
        layer = QgsProcessingUtils.mapLayerFromString(value, context, False)  # a layer id or name, never loaded
        if layer is not None:
            source = layer.source().split("|")[0]
            return source if os.path.exists(source) or is_raster_source(source) else None
    return None


class RasterLayerParameter(QgsProcessingParameterRasterLayer):
    """A raster layer parameter whose check accepts an existing file without loading it as a QGIS layer.

    QGIS checks a raster layer parameter by loading the file as a layer (processing.run and
    qgis_process both check), and loading computes a histogram for the layer's default style that
    GDAL saves as '<input>.aux.xml' beside the input. The algorithms open the file with GDAL and
    explain any problem themselves, and write nothing beside their inputs.
    """

    def checkValueIsAcceptable(self, value, context=None):  # noqa: N802 (QGIS API)
        value = widget_value(value)
        if is_raster_source(value):  # a file, or a GDAL subdataset name such as NETCDF:"scene.nc":radiance
            return True
        return super().checkValueIsAcceptable(value, context)  # layers, layer ids, QgsProperty, empty

    def clone(self):
        optional = bool(self.flags() & QgsProcessingParameterDefinition.Flag.FlagOptional)
        copy = RasterLayerParameter(self.name(), self.description(), self.defaultValue(), optional)
        copy.setFlags(self.flags())
        copy.setHelp(self.help())
        return copy


class RasterListParameter(QgsProcessingParameterMultipleLayers):
    """Several rasters, whose check accepts existing files without loading them as QGIS layers (as
    RasterLayerParameter does for one raster: loading would leave '<input>.aux.xml' beside each input)."""

    def __init__(self, name, description, optional=False):
        super().__init__(name, description, QgsProcessing.SourceType.TypeRaster, optional=optional)

    def checkValueIsAcceptable(self, value, context=None):  # noqa: N802 (QGIS API)
        value = widget_value(value)
        items = _list_items(value)
        if items and all(is_raster_source(item) for item in items):
            return True
        return super().checkValueIsAcceptable(value, context)  # layers, layer ids, QgsProperty, empty

    def clone(self):
        optional = bool(self.flags() & QgsProcessingParameterDefinition.Flag.FlagOptional)
        copy = RasterListParameter(self.name(), self.description(), optional)
        copy.setFlags(self.flags())
        copy.setHelp(self.help())
        return copy


def _same_file_key(path):
    return os.path.normcase(os.path.realpath(str(path)))


def _project_layer_names(context):
    """{file key: layer name} of the raster layers of the context's project (the first layer of a file wins)."""
    project = context.project() if context is not None else None
    if project is None:
        return {}
    names = {}
    for layer in project.mapLayers().values():
        if isinstance(layer, QgsRasterLayer) and layer.providerType() == "gdal":
            names.setdefault(_same_file_key(layer.source().split("|")[0]), layer.name())
    return names


def split_file_list(item):
    """The files of one item of a file list: QGIS hands a ';'-separated string over as one item (qgis_process
    MODELS=a.pt;b.pt); an existing path is one file, whatever it holds."""
    if os.path.exists(item) or ";" not in item:
        return [item]
    return [part for part in item.split(";") if part]


def _list_items(value):
    """The items of a multiple-layer value: a list as given, one string (';'-separated, as QGIS writes them)."""
    if isinstance(value, (list, tuple)):
        return [widget_value(item) for item in value]
    if isinstance(value, str) and value:
        return [value] if is_raster_source(value) else split_file_list(value)
    return []


class FersAlgorithm(QgsProcessingAlgorithm):
    """Base class: subclasses implement `compute(parameters, context, feedback)` returning the results dict.

    Engine errors (FersError) become QgsProcessingException with the engine's message, so the
    user sees what was wrong and what to do, never a traceback.
    """

    algorithm_name = ""  # the id after "fers:"
    display_name = ""  # the Toolbox's name
    help_intro = ""  # what the algorithm does: the help's first paragraphs
    help_notes = ""  # paragraphs after the parameter list
    help_anchor = ""  # GitHub anchor of the algorithm's README section
    summary = ""  # one sentence: the Toolbox tooltip
    icon_file = "fers.svg"  # in icons/
    search_tags = ()

    def createInstance(self):  # noqa: N802 (QGIS API)
        return type(self)()

    def name(self):
        return self.algorithm_name

    def displayName(self):  # noqa: N802 (QGIS API)
        return self.tr(self.display_name)

    needs_torch = False  # the network algorithms: without PyTorch canExecute() says why and how to install it

    def canExecute(self):  # noqa: N802 (QGIS API)
        """(False, why and how to install PyTorch) for a network algorithm without it, so the Toolbox says so
        before the dialog opens; found without importing torch."""
        from ..fers_core.enhance.torch_support import missing_torch_message

        missing = missing_torch_message(html_link=True) if self.needs_torch else None
        return (False, missing) if missing else (True, "")

    def add_parameter(self, parameter, help_text):
        """Add `parameter` with its help (the dialog's tooltip, and a line of shortHelpString); a number's default is
        appended when the help does not give it (qgis_process 3.22 prints no defaults)."""
        note = _default_note(parameter, help_text)
        if note:
            help_text = help_text[:-1] + note + "." if help_text.endswith(".") else help_text + note
        parameter.setHelp(html.escape(help_text, quote=False))
        return self.addParameter(parameter)

    def shortHelpString(self):  # noqa: N802 (QGIS API)
        """The intro, each parameter's label and help (main, then advanced) and the notes, HTML-escaped.

        Assembled from the parameters' own help, so the dialog's tooltips, its help panel and
        `qgis_process help` say the same; the help panel reads HTML, hence the escaping.
        """
        definitions = [p for p in self.parameterDefinitions()
                       if not p.flags() & QgsProcessingParameterDefinition.Flag.FlagHidden]
        sections = [html.escape(self.tr(self.help_intro), quote=False)]
        for title, chosen in (("Parameters", [p for p in definitions if not is_advanced(p)]),
                              ("Advanced parameters", [p for p in definitions if is_advanced(p)])):
            if chosen:
                sections.append("\n".join([self.tr(title) + ":"] + [
                    f"{html.escape(p.description(), quote=False)}: {p.help()}" for p in chosen]))
        if self.help_notes:
            sections.append(html.escape(self.tr(self.help_notes), quote=False))
        return "\n\n".join(section for section in sections if section)

    def shortDescription(self):  # noqa: N802 (QGIS API)
        return self.tr(self.summary)

    def helpUrl(self):  # noqa: N802 (QGIS API)
        return help_address(self.help_anchor)

    def icon(self):
        from qgis.PyQt.QtGui import QIcon

        return QIcon(self.svgIconPath())

    def svgIconPath(self):  # noqa: N802 (QGIS API)
        return os.path.join(ICONS_DIR, self.icon_file)

    def tags(self):
        return [self.tr(tag) for tag in self.search_tags]

    def group(self):
        return self.tr(self.group_name)

    def groupId(self):  # noqa: N802 (QGIS API)
        return self.group_id

    def tr(self, text):
        return text

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 (QGIS API)
        engine_feedback = QgisFeedback(feedback)
        self._warn_unknown_parameters(parameters, engine_feedback)
        ok, refusal = self.checkParameterValues(parameters, context)  # QGIS 3.22's batch dialog and models skip it
        if not ok:
            raise QgsProcessingException(refusal)
        try:
            outputs, inputs = self.run_paths(parameters, context)
            check_outputs(outputs, inputs)  # before any pass: no output on an input, another output, a folder
            rasters = [(name, path) for name, path in outputs if self.parameterDefinition(name).type() ==
                       "rasterDestination"]
            check_raster_outputs([(name, path, 1) for name, path in rasters])  # and formats FERS can write
            check_outputs_keep_placement(rasters, dict(inputs).get("INPUT"))  # and that hold the input's GCPs
            # the guard: stale temporaries of killed runs removed, this run's removed however it ends (and its
            # outputs when it fails), Ctrl+C and SIGTERM handled when the run is in the main thread (qgis_process)
            with bounded_gdal_cache(), RunGuard([path for _, path in outputs], engine_feedback):
                return self.compute(parameters, context, engine_feedback)
        except FersError as error:
            raise QgsProcessingException(str(error)) from None
        except Interrupted as error:
            raise QgsProcessingException(str(error)) from None
        except MemoryError:
            raise QgsProcessingException(self.out_of_memory_message()) from None
        except RuntimeError as error:  # PyTorch reports a failed allocation as a RuntimeError, GDAL every failure
            if _allocation_failed(error):
                raise QgsProcessingException(self.out_of_memory_message()) from None
            if feedback is not None:
                feedback.pushDebugInfo(traceback.format_exc())
            raise QgsProcessingException(
                f"The run failed: {str(error).strip().rstrip('.') or type(error).__name__}. Check the inputs and "
                "the output locations this names; if it is not about them, please report it with this log."
            ) from None
        except OSError as error:  # disk full, a file removed or locked while the run used it
            if feedback is not None:
                feedback.pushDebugInfo(traceback.format_exc())
            where = f" '{error.filename}'" if error.filename else ""
            raise QgsProcessingException(
                f"Reading or writing{where} failed ({error.strerror or error}): check the path, its permissions "
                "and the free disk space, then run again."
            ) from None

    def compute(self, parameters, context, feedback):
        raise NotImplementedError

    def _warn_unknown_parameters(self, parameters, feedback):
        """A warning for each parameter name the algorithm does not have (a typo on the command line or in a script
        would otherwise be dropped without a word), with the closest names it has."""
        known = [definition.name() for definition in self.parameterDefinitions()]
        for name in sorted(set(parameters) - set(known)):
            close = difflib.get_close_matches(str(name).upper(), known, n=2, cutoff=0.5)
            hint = f"; did you mean {' or '.join(close)}?" if close else f"; its parameters are {', '.join(known)}."
            feedback.warning(f"'{name}' is not a parameter of {self.id()}, so it was ignored{hint}")

    def out_of_memory_message(self):
        """What to tell a user whose run ran out of memory."""
        return ("The run ran out of memory: lower the memory budget (MEMORY_MB; for fers:detect also the spatial tile "
                "size, TILE_SIZE) or close other programs, then run again.")

    def checkParameterValues(self, parameters, context):  # noqa: N802 (QGIS API)
        """QGIS's checks of each value, then `check_request`'s: a refused request never starts a run."""
        ok, message = super().checkParameterValues(parameters, context)
        if not ok:
            return ok, self._explain_rejection(parameters, context) or message
        rounded = self._number_problem(parameters)
        if rounded:
            return False, rounded
        try:
            self.check_request(parameters, context)
        except InputError as error:
            return False, str(error)
        return True, ""

    def _number_problem(self, parameters):
        """The refusal of a number parameter's value QGIS would take without a word: text that is not a number for
        an optional one (INPUT_NODATA=abc ran without it), a fraction for a whole number (EPOCHS 1.5 ran 2
        epochs); '' when there is none."""
        from qgis.core import QgsProcessingParameterNumber

        for definition in self.parameterDefinitions():
            value = widget_value(parameters.get(definition.name()))
            if isinstance(definition, QgsProcessingParameterNumber) and isinstance(value, (int, float, str)) and \
                    str(value).strip() and not _non_finite(value):  # QGIS's own check rules on those
                reason = rejection_reason(definition, value, None)  # the sentence QGIS's own refusals get
                if reason:
                    return reason
        return ""

    def _explain_rejection(self, parameters, context):
        """What is wrong with the first value QGIS's own check refused, in a sentence ('' when it cannot say)."""
        for definition in self.parameterDefinitions():
            value = parameters.get(definition.name())
            if definition.checkValueIsAcceptable(value, context):
                continue
            try:
                return rejection_reason(definition, widget_value(value), context)
            except Exception:  # the explanation must never hide QGIS's own refusal
                return ""
        return ""

    def check_request(self, parameters, context):
        """InputError for settings that do not go together; subclasses call the engine's request checks here."""

    def run_paths(self, parameters, context):
        """(outputs, inputs) of a run: (parameter name, file path) pairs, read from the values without side effects.

        Outputs are the destination parameters given a file (a temporary output cannot clash with anything);
        inputs are every other parameter's existing files and folders, and the files of the layers named.
        """
        outputs, inputs = [], []
        for definition in self.parameterDefinitions():
            name, value = definition.name(), parameters.get(definition.name())
            if definition.isDestination():
                path = _destination_path(definition, value)
                if path:
                    outputs.append((name, path))
                continue
            for item in value if isinstance(value, (list, tuple)) else [value]:
                path = _input_path(definition, item, context)
                if path:
                    inputs.append((name, path))
        return outputs, inputs

    def validateInputCrs(self, parameters, context):  # noqa: N802 (QGIS API)
        """No generic CRS warning: the engine refuses a mask in another CRS with its own message.

        QGIS's generic check loads every input file as a layer, and loading computes a histogram
        that GDAL saves as '<input>.aux.xml' beside the input; the algorithms write nothing there.
        """
        return True

    def raster_source(self, parameters, name, context):
        """File path of a raster layer parameter (None when optional and not given).

        A file path is used as given, without loading it as a QGIS layer: loading a layer computes
        a histogram for its default style, which GDAL saves as '<input>.aux.xml' beside the input,
        and the algorithms write nothing beside their inputs. Project layers and layer ids are
        resolved through QGIS (such a layer is already loaded).
        """
        value = widget_value(parameters.get(name))
        if is_raster_source(value):
            return value
        layer = self.parameterAsRasterLayer(parameters, name, context)
        if layer is None:
            return None
        return layer_file(layer)

    def input_nodata(self, parameters, context, feedback=None, name="INPUT"):
        """Extra nodata values of the raster parameter `name`: INPUT_NODATA and, for a project layer, the
        single-value additional nodata values of its properties (a file path is not loaded as a layer; `name` None:
        INPUT_NODATA only)."""
        values = []
        if widget_value(parameters.get(INPUT_NODATA)) not in (None, ""):
            values.append(self.parameterAsDouble(parameters, INPUT_NODATA, context))
        if name and not is_raster_source(widget_value(parameters.get(name))):
            layer = self.parameterAsRasterLayer(parameters, name, context)
            if layer is not None:
                extra = layer_nodata(layer, feedback)
                if extra and feedback is not None:
                    feedback.info(f"Additional nodata from the layer's properties: "
                                  f"{', '.join(f'{v:g}' for v in extra)}.")
                values += extra
        return nodata_values(values)  # NaN dropped: never valid anyway

    def optional_output(self, parameters, name, context):
        """Destination path of an optional output, or None when the user skipped it (static_destination)."""
        value = static_destination(parameters.get(name))
        if value is None or value == "" or str(value).lower() == "skip":
            return None
        return self.parameterAsOutputLayer(parameters, name, context) or None

    def thread_count(self):
        """Threads QGIS allows processing to use (Settings > Options > Processing), or 0 for the default."""
        from qgis.core import QgsApplication

        threads = QgsApplication.maxThreads()
        return threads if threads and threads > 0 else 0

    def band_list(self, parameters, name, context):
        """1-based band numbers from a band parameter (None = all bands); each item checked by parse_band_list
        (QGIS's own conversion turns an item that is not a number into band 0)."""
        value = widget_value(parameters.get(name))
        if value is None or isinstance(value, (str, int, float, list, tuple)):
            return parse_band_list(value, name)
        bands = self.parameterAsInts(parameters, name, context)  # a QgsProperty of a model or a batch run
        return [int(b) for b in bands] or None

    def raster_sources(self, parameters, name, context):
        """(path, name) of every raster of a RasterListParameter (raster_inputs without the layers)."""
        return [(path, label) for path, label, _ in self.raster_inputs(parameters, name, context)]

    def raster_inputs(self, parameters, name, context):
        """(path, name, layer) of every raster of a RasterListParameter: files (and GDAL subdataset names) as given,
        without loading them as QGIS layers (layer None); project layers and layer ids through QGIS."""
        from qgis.core import QgsProcessingUtils

        items = _list_items(widget_value(parameters.get(name)))
        if not all(isinstance(item, str) for item in items):
            return [(layer_file(layer), layer.name(), layer)
                    for layer in self.parameterAsLayerList(parameters, name, context)]
        sources = []
        named = _project_layer_names(context)
        for item in items:
            if is_raster_source(item):  # a file: named as its layer in the project (the dialog hands over paths)
                sources.append((item, named.get(_same_file_key(item)) or os.path.splitext(os.path.basename(item))[0],
                                None))
                continue
            layer = QgsProcessingUtils.mapLayerFromString(item, context)
            if layer is None:
                raise InputError(f"{name}: '{item}' is neither a raster file nor a layer of the project; check "
                                 "the path.")
            sources.append((layer_file(layer), layer.name(), layer))
        return sources
