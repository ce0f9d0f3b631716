"""fers:rx's ENVI-style modes and local RX's COMPONENTS from QGIS's own dialog and in a processing model."""

import numpy as np

from .rasters import read
from .test_dialogs import algorithm, delete_dialogs, fill, loaded_layers, project, run_dialog, scene, toolbox_dialog  # noqa: F401


def test_rx_dialog_runs_the_local_mean_mode_with_its_windows(project, scene, run_alg, tmp_path):  # noqa: F811
    dialog = toolbox_dialog(algorithm("fers:rx"))
    fill(dialog, {"INPUT": scene[0], "MODE": 2, "WINDOW_INNER": 3, "WINDOW_OUTER": 9})
    parameters, results, log = run_dialog(dialog)
    assert parameters["MODE"] == 2 and "RXD, local mean (9 px kernel, 3 px guard)" in log
    direct = run_alg("fers:rx", {"INPUT": scene[0], "MODE": 2, "WINDOW_INNER": 3, "WINDOW_OUTER": 9,
                                 "OUTPUT": str(tmp_path / "direct.tif")})
    np.testing.assert_array_equal(read(results["OUTPUT"])[0], read(direct["OUTPUT"])[0])
    assert len(loaded_layers(project)) == 1


def test_a_model_chains_the_new_modes(scene, run_alg, tmp_path):  # noqa: F811
    """Two fers:rx children in a QgsProcessingModelAlgorithm (as built in the modeler): RXD-UTD with a local
    mean, and local RX on 10 principal components; the model runs through processing.run."""
    from qgis.core import (
        QgsProcessingModelAlgorithm,
        QgsProcessingModelChildAlgorithm,
        QgsProcessingModelChildParameterSource,
        QgsProcessingModelOutput,
        QgsProcessingModelParameter,
        QgsProcessingParameterRasterLayer,
    )

    model = QgsProcessingModelAlgorithm("rx modes", "tests")
    model.addModelParameter(QgsProcessingParameterRasterLayer("scene", "Scene"), QgsProcessingModelParameter("scene"))
    for child_id, values in (("variant", {"MODE": 6, "WINDOW_INNER": 3, "WINDOW_OUTER": 9}),
                             ("local", {"MODE": 1, "WINDOW_INNER": 3, "WINDOW_OUTER": 9, "COMPONENTS": 10})):
        child = QgsProcessingModelChildAlgorithm("fers:rx")
        child.setChildId(child_id)
        child.addParameterSources("INPUT", [QgsProcessingModelChildParameterSource.fromModelParameter("scene")])
        for key, value in values.items():
            child.addParameterSources(key, [QgsProcessingModelChildParameterSource.fromStaticValue(value)])
        output = QgsProcessingModelOutput(f"{child_id}_scores")
        output.setChildOutputName("OUTPUT")
        child.setModelOutputs({output.name(): output})
        model.addChildAlgorithm(child)
    results = run_alg(model, {"scene": scene[0], "variant:variant_scores": str(tmp_path / "variant.tif"),
                              "local:local_scores": str(tmp_path / "local.tif")})
    for child_id, mode, extra in (("variant", 6, {}), ("local", 1, {"COMPONENTS": 10})):
        direct = run_alg("fers:rx", {"INPUT": scene[0], "MODE": mode, "WINDOW_INNER": 3, "WINDOW_OUTER": 9,
                                     **extra, "OUTPUT": str(tmp_path / f"direct-{child_id}.tif")})
        np.testing.assert_array_equal(read(results[f"{child_id}:{child_id}_scores"])[0], read(direct["OUTPUT"])[0])
