"""fers:detect_mask_polygons_report: the example model (models/*.model3) as a Toolbox algorithm.

The model file is made by scripts/make_example_model.py. Its children (fers:detect,
fers:evaluate) are looked up in the Processing registry, which does not hold the fers provider
yet while the provider loads for the first time; `attach` re-resolves them once it does.
"""

import html
import os

from qgis.core import Qgis, QgsMessageLog, QgsProcessingModelAlgorithm

from .help_links import help_address

MODEL_FILE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "models",
                          "detect_mask_polygons_report.model3")


class ExampleModel(QgsProcessingModelAlgorithm):
    """The shipped model, with a Toolbox id (`fers:detect_mask_polygons_report`) and group of its own."""

    def __init__(self):
        super().__init__()
        if not self.fromFile(MODEL_FILE):
            raise RuntimeError(f"Cannot read the example model {MODEL_FILE}")
        self.setSourceFilePath(MODEL_FILE)

    @classmethod
    def load(cls):
        """The model, or None (with the reason in the QGIS log) when its file cannot be read."""
        try:
            return cls()
        except RuntimeError as error:
            QgsMessageLog.logMessage(f"{error}: the example model is left out of the Toolbox.", "FERS",
                                     Qgis.MessageLevel.Warning)
            return None

    def canExecute(self):  # noqa: N802 (QGIS API)
        """(False, how to install PyTorch) without it, as fers:detect says: the model runs fers:detect."""
        from ..fers_core.enhance.torch_support import missing_torch_message

        missing = missing_torch_message(html_link=True)
        return (False, missing) if missing else super().canExecute()

    def name(self):
        return "detect_mask_polygons_report"

    def displayName(self):  # noqa: N802 (QGIS API)
        return "Detect, mask, polygons, report (example model)"

    def group(self):
        return "Example models"

    def groupId(self):  # noqa: N802 (QGIS API)
        return "examples"

    def shortHelpString(self):  # noqa: N802 (QGIS API)
        """As the provider's other algorithms: the description, then each input and output by its label with its
        help, HTML-escaped plain text (the model's own help is an HTML page that qgis_process prints raw)."""
        content = self.helpContent()
        sections = [content.get("ALG_DESC", "")]
        for title, chosen in (("Parameters", [p for p in self.parameterDefinitions() if not p.isDestination()]),
                              ("Outputs", self.destinationParameterDefinitions())):
            sections.append("\n".join([f"{title}:"] + [
                f"{p.description()}: {content.get(p.name(), '')}".rstrip(": ") for p in chosen]))
        return "\n\n".join(html.escape(section, quote=False) for section in sections if section)

    def shortDescription(self):  # noqa: N802 (QGIS API)
        return "Detect anomalies with fers:detect, write the mask and the objects, report them against a ground truth."

    def helpUrl(self):  # noqa: N802 (QGIS API)
        return help_address("example-model")

    def tags(self):
        return ["model", "example", "anomaly", "mask", "polygons", "ROC", "AUC", "report", "FERS"]

    def createInstance(self):  # noqa: N802 (QGIS API)
        return ExampleModel()

    def attached(self):
        """Whether every child algorithm was found in the Processing registry."""
        return all(child.algorithm() is not None for child in self.childAlgorithms().values())

    def attach(self):
        """Resolve the children again (now that the provider is registered) and the model outputs with them."""
        for child_id in self.childAlgorithms():
            self.childAlgorithm(child_id).reattach()
        self.updateDestinationParameters()
