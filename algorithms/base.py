"""Shared plumbing for FERS algorithms: feedback adapter and error translation."""

import os
import traceback

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterRasterLayer,
)

from ..fers_core.errors import FersError, InputError
from ..fers_core.feedback import Feedback
from ..fers_core.local_rx import validate_windows
from ..fers_core.raster_io import bounded_gdal_cache


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


class RasterLayerParameter(QgsProcessingParameterRasterLayer):
    """A raster layer parameter whose check accepts an existing file without loading it as a QGIS layer.

    QGIS checks a raster layer parameter by loading the file as a layer (processing.run and
    qgis_process both check), and loading computes a histogram for the layer's default style that
    GDAL saves as '<input>.aux.xml' beside the input. The algorithms open the file with GDAL and
    explain any problem themselves, and write nothing beside their inputs.
    """

    def checkValueIsAcceptable(self, value, context=None):  # noqa: N802 (QGIS API)
        if isinstance(value, str) and os.path.isfile(value):
            return True
        return super().checkValueIsAcceptable(value, context)

    def clone(self):
        optional = bool(self.flags() & QgsProcessingParameterDefinition.FlagOptional)
        copy = RasterLayerParameter(self.name(), self.description(), self.defaultValue(), optional)
        copy.setFlags(self.flags())
        return copy


class FersAlgorithm(QgsProcessingAlgorithm):
    """Base class: subclasses implement `compute(parameters, context, feedback)` returning the results dict.

    Engine errors (FersError) become QgsProcessingException with the engine's message, so the
    user sees what was wrong and what to do, never a traceback.
    """

    def createInstance(self):  # noqa: N802 (QGIS API)
        return type(self)()

    needs_torch = False  # the network algorithms: without PyTorch canExecute() says why and how to install it

    def canExecute(self):  # noqa: N802 (QGIS API)
        """(False, why and how to install PyTorch) for a network algorithm without it, so the Toolbox says so
        before the dialog opens; found without importing torch."""
        from ..fers_core.torch_support import missing_torch_message

        missing = missing_torch_message() if self.needs_torch else None
        return (False, missing) if missing else (True, "")

    def group(self):
        return self.tr(self.group_name)

    def groupId(self):  # noqa: N802 (QGIS API)
        return self.group_id

    def tr(self, text):
        return text

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 (QGIS API)
        try:
            with bounded_gdal_cache():
                return self.compute(parameters, context, QgisFeedback(feedback))
        except FersError as error:
            raise QgsProcessingException(str(error)) from None
        except MemoryError:
            raise QgsProcessingException(
                "The run ran out of memory: lower MEMORY_MB (and TILE_SIZE for fers:detect) or close other programs, "
                "then run again."
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
        value = parameters.get(name)
        if isinstance(value, str) and os.path.isfile(value):
            return value
        layer = self.parameterAsRasterLayer(parameters, name, context)
        if layer is None:
            return None
        return layer.source().split("|")[0]

    def optional_output(self, parameters, name, context):
        """Destination path of an optional output, or None when the user skipped it."""
        value = parameters.get(name)
        if value is None or value == "" or str(value).lower() == "skip":
            return None
        return self.parameterAsOutputLayer(parameters, name, context) or None

    def thread_count(self):
        """Threads QGIS allows processing to use (Settings > Options > Processing), or 0 for the default."""
        from qgis.core import QgsApplication

        threads = QgsApplication.maxThreads()
        return threads if threads and threads > 0 else 0

    def band_list(self, parameters, name, context):
        """1-based band numbers from a band parameter (None = all bands)."""
        bands = self.parameterAsInts(parameters, name, context)
        return [int(b) for b in bands] or None

    def local_window_problem(self, parameters, context):
        """Why WINDOW_INNER / WINDOW_OUTER cannot serve local RX, or None when they can."""
        try:
            validate_windows(self.parameterAsInt(parameters, "WINDOW_INNER", context),
                             self.parameterAsInt(parameters, "WINDOW_OUTER", context))
        except InputError as error:
            return str(error)
        return None
