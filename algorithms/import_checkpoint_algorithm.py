"""fers:import_checkpoint: convert a FERS authors' checkpoint folder into a FERS model file."""

from qgis.core import QgsProcessingOutputString, QgsProcessingParameterFile, QgsProcessingParameterFileDestination

from .base import FersAlgorithm


class ImportCheckpointAlgorithm(FersAlgorithm):
    """Reads convh.pt, enc.pt, pc.pt (and spa_fen.pt when present) and writes one self-describing model file."""

    FOLDER, OUTPUT_MODEL, SUMMARY = "FOLDER", "OUTPUT_MODEL", "SUMMARY"
    group_name, group_id = "Model training", "training"
    needs_torch = True

    algorithm_name, display_name = "import_checkpoint", "Import FERS authors' checkpoint"
    help_anchor = "fersimport_checkpoint-import-a-fers-authors-checkpoint"
    summary = "Converts a FERS authors' checkpoint folder into one FERS model file."
    icon_file = "import_checkpoint.svg"
    search_tags = ("hyperspectral", "anomaly", "FERS", "checkpoint", "import", "convert", "model", "PyTorch")
    help_intro = (
        "Converts a checkpoint folder as published with the FERS reference code into one FERS model file that "
        "the FERS anomaly detector loads. The band count is read from the tensors; the files are read as plain "
        "tensors only (no code is unpickled). Needs PyTorch."
    )

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API)
        self.add_parameter(QgsProcessingParameterFile(self.FOLDER, self.tr("Checkpoint folder"),
                                                      QgsProcessingParameterFile.Behavior.Folder),
                           "The folder with convh.pt, enc.pt, pc.pt and optionally spa_fen.pt (the spatial branch).")
        self.add_parameter(QgsProcessingParameterFileDestination(self.OUTPUT_MODEL, self.tr("Model file"),
                                                                 "FERS model (*.pt)"),
                           "The FERS model file (.pt) to write.")
        self.addOutput(QgsProcessingOutputString(self.SUMMARY, self.tr("Model summary")))

    def compute(self, parameters, context, feedback):
        from ..fers_core.enhance.torch_support import require_torch

        require_torch()
        from ..fers_core.enhance.checkpoints import import_authors_checkpoint
        from ..fers_core.enhance.model_file import save_model

        folder = self.parameterAsFile(parameters, self.FOLDER, context)
        model = import_authors_checkpoint(folder)
        output = self.parameterAsFileOutput(parameters, self.OUTPUT_MODEL, context)
        save_model(model, output, inputs=[("the checkpoint folder", folder)])
        summary = f"{model.bands} bands, branches: {', '.join(model.branches)}"
        feedback.info(f"Wrote {output}: {summary}.")
        return {self.OUTPUT_MODEL: output, self.SUMMARY: summary}
