"""Shared plumbing for FERS algorithms: feedback adapter and error translation."""

from qgis.core import QgsProcessingAlgorithm, QgsProcessingException

from ..fers_core.errors import FersError
from ..fers_core.feedback import Feedback


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


class FersAlgorithm(QgsProcessingAlgorithm):
    """Base class: subclasses implement `compute(parameters, context, feedback)` returning the results dict.

    Engine errors (FersError) become QgsProcessingException with the engine's message, so the
    user sees what was wrong and what to do, never a traceback.
    """

    def createInstance(self):  # noqa: N802 (QGIS API)
        return type(self)()

    def group(self):
        return self.tr(self.group_name)

    def groupId(self):  # noqa: N802 (QGIS API)
        return self.group_id

    def tr(self, text):
        return text

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 (QGIS API)
        try:
            return self.compute(parameters, context, QgisFeedback(feedback))
        except FersError as error:
            raise QgsProcessingException(str(error)) from None

    def compute(self, parameters, context, feedback):
        raise NotImplementedError

    def raster_source(self, parameters, name, context):
        """File path of a raster layer parameter (None when optional and not given)."""
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

    def band_list(self, parameters, name, context):
        """1-based band numbers from a band parameter (None = all bands)."""
        bands = self.parameterAsInts(parameters, name, context)
        return [int(b) for b in bands] or None
