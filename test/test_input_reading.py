"""How the algorithms read their inputs and name their outputs, through processing.run and qgis_process.

- signed 8-bit rasters give the scores of the same values stored as Int16 (fers:rx read them as unsigned);
- BANDS items that are not numbers are named (QGIS turned them into band 0: "band 0 out of range");
- a container of subdatasets names them; a checkpoint file instead of its folder is explained;
- masks, ground truths and score rasters on another grid are refused;
- output names write the format their extension names or are refused (a .vrt or .asc was a GeoTIFF);
- no algorithm leaves '<input>.aux.xml' beside an input, whether the run succeeds or is refused
  (fers:train and fers:evaluate loaded their inputs as QGIS layers);
- a SCHEDULER that accepts the connection and never answers stops fers:rx with a sentence.
"""

import importlib.util
import os
import socket
import subprocess
import threading
import time

import numpy as np
import pytest
from osgeo import gdal
from qgis.core import QgsProcessingException

from .conftest import ROOT, TEST_MODEL_BANDS
from .core.io.test_raster_types import signed_cube, two_variable_netcdf, write_signed
from .rasters import GEOTRANSFORM, read, write_cube

QGIS_PROCESS = str(ROOT / "scripts" / "qgis_process")
MODEL_BANDS = TEST_MODEL_BANDS  # the shared model_file fixture's (conftest)
TINY_TRAINING = {"MODEL_BANDS": MODEL_BANDS, "EPOCHS": 1, "PATCH_SIZE": 16, "BATCH_SIZE": 4, "SEED": 3, "DEVICE": 1}


def qgis_process(algorithm, **parameters):
    """(exit status, stdout + stderr) of `qgis_process run algorithm -- KEY=value ...` (lists repeat the key)."""
    arguments = []
    for key, value in parameters.items():
        arguments += [f"{key}={item}" for item in (value if isinstance(value, list) else [value])]
    done = subprocess.run([QGIS_PROCESS, "run", algorithm, "--", *arguments], capture_output=True, text=True,
                          timeout=300)
    return done.returncode, done.stdout + done.stderr


def cube(bands=6, rows=20, cols=24, seed=0):
    rng = np.random.default_rng(seed)
    data = (rng.standard_normal((rows * cols, bands)) @ (rng.standard_normal((bands, bands)) + 2 * np.eye(bands))
            + 100).T.reshape(bands, rows, cols)
    return data.astype(np.float32)


def aux_files(*folders):
    return sorted(str(path) for folder in folders for path in folder.rglob("*.aux.xml"))


# ---------------------------------------------------------------------------------------------
# Signed bytes


@pytest.fixture
def signed_pair(tmp_path):
    """A signed 8-bit raster (nodata -128) and the same values as Int16."""
    values = signed_cube()
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    return (write_signed(inputs / "signed.tif", values),
            write_cube(inputs / "int16.tif", values.astype(np.int16), nodata=-128), values)


@pytest.mark.slow
@pytest.mark.parametrize("algorithm, extra", [("fers:rx", {}), ("fers:rx", {"MODE": 1, "WINDOW_INNER": 3,
                                                                              "WINDOW_OUTER": 9}),
                                              ("fers:detect", {})])
def test_signed_bytes_score_as_their_values(run_alg, tmp_path, signed_pair, model_file, algorithm, extra):
    signed, as_int16, values = signed_pair
    if algorithm == "fers:detect":
        extra = {"MODEL": model_file, "DEVICE": 1}
    outputs = {}
    for name, source in (("signed", signed), ("int16", as_int16)):
        outputs[name] = read(run_alg(algorithm, {"INPUT": source, "OUTPUT": str(tmp_path / f"{name}.tif"),
                                                 **extra})["OUTPUT"])
    scores, nodata = outputs["signed"][0], outputs["signed"][1]
    np.testing.assert_array_equal(scores, outputs["int16"][0])
    np.testing.assert_array_equal(scores == nodata, (values == -128).any(axis=0))


@pytest.mark.slow
def test_signed_bytes_through_qgis_process(tmp_path, signed_pair):
    signed, as_int16, _ = signed_pair
    for name, source in (("signed", signed), ("int16", as_int16)):
        status, log = qgis_process("fers:rx", INPUT=source, OUTPUT=str(tmp_path / f"{name}.tif"))
        assert status == 0, log
    np.testing.assert_array_equal(read(tmp_path / "signed.tif")[0], read(tmp_path / "int16.tif")[0])


# ---------------------------------------------------------------------------------------------
# Messages: band lists, containers, checkpoint files


@pytest.mark.parametrize("algorithm", ["fers:rx", "fers:detect"])
def test_a_band_item_that_is_not_a_number_is_named(run_alg, tmp_path, model_file, algorithm):
    source = write_cube(tmp_path / "cube.tif", cube())
    with pytest.raises(QgsProcessingException, match=r"BANDS '1,2,x': 'x' is not a band number .*'1-100, 120"):
        run_alg(algorithm, {"INPUT": source, "BANDS": "1,2,x", "MODEL": model_file,
                            "OUTPUT": str(tmp_path / "out.tif")})
    assert not (tmp_path / "out.tif").exists()


@pytest.mark.parametrize("algorithm", ["fers:rx", "fers:detect", "fers:train"])
def test_a_band_listed_twice_is_refused_before_the_run(run_alg, tmp_path, model_file, algorithm):
    source = write_cube(tmp_path / "cube.tif", cube())
    parameters = {"INPUT": source, "MODEL": model_file, "OUTPUT": str(tmp_path / "out.tif")}
    if algorithm == "fers:train":
        parameters = {**TINY_TRAINING, "INPUTS": [source], "OUTPUT_MODEL": str(tmp_path / "out.pt")}
    with pytest.raises(QgsProcessingException, match=r"^BANDS '1-3, 3-4' lists band 3 more than once; .*list each"):
        run_alg(algorithm, {**parameters, "BANDS": "1-3, 3-4"})
    assert list(tmp_path.iterdir()) == [tmp_path / "cube.tif"]


def test_the_engine_refuses_a_band_listed_twice_from_any_caller(tmp_path):
    from fers.fers_core.detectors.global_rx import run_global_rx
    from fers.fers_core.errors import InputError

    with pytest.raises(InputError, match=r"^BANDS '2, 1, 2' lists band 2 more than once"):
        run_global_rx(write_cube(tmp_path / "cube.tif", cube()), str(tmp_path / "out.tif"), bands=[2, 1, 2])
    assert not (tmp_path / "out.tif").exists()


@pytest.mark.slow
def test_band_lists_through_qgis_process_and_fers_train(run_alg, tmp_path):
    source = write_cube(tmp_path / "cube.tif", cube())
    status, log = qgis_process("fers:rx", INPUT=source, BANDS="1,2,x", OUTPUT=str(tmp_path / "out.tif"))
    assert status != 0 and "'x' is not a band number" in log and "band 0" not in log and "[0]" not in log
    status, log = qgis_process("fers:rx", INPUT=source, BANDS=["2", "4"], OUTPUT=str(tmp_path / "two.tif"))
    assert status == 0, log
    assert gdal.Open(str(tmp_path / "two.tif")).GetMetadataItem("fers_bands") == "2,4"
    with pytest.raises(QgsProcessingException, match=r"BANDS '1-3, y': 'y' is not a band number"):
        run_alg("fers:train", {**TINY_TRAINING, "INPUTS": [source], "BANDS": "1-3, y",
                               "OUTPUT_MODEL": str(tmp_path / "m.pt")})


@pytest.mark.parametrize("algorithm", ["fers:rx", "fers:detect"])
def test_a_raster_inside_a_zip_runs_as_the_file_itself(run_alg, tmp_path, model_file, algorithm):
    import zipfile

    source = write_cube(tmp_path / "cube.tif", cube())
    with zipfile.ZipFile(tmp_path / "scenes.zip", "w") as zipped:
        zipped.write(source, "cube.tif")
    extra = {"MODEL": model_file} if algorithm == "fers:detect" else {}
    direct = run_alg(algorithm, {"INPUT": source, "OUTPUT": str(tmp_path / "direct.tif"), **extra})
    zipped = run_alg(algorithm, {"INPUT": f"/vsizip/{tmp_path}/scenes.zip/cube.tif",
                                 "OUTPUT": str(tmp_path / "zipped.tif"), **extra})
    np.testing.assert_array_equal(read(zipped["OUTPUT"])[0], read(direct["OUTPUT"])[0])
    assert aux_files(tmp_path) == []


def test_a_netcdf_of_subdatasets_names_them_and_a_subdataset_runs(run_alg, tmp_path):
    path = two_variable_netcdf(tmp_path / "scene.nc")
    with pytest.raises(QgsProcessingException, match=r"'scene.nc' has no bands of its own but 2 subdatasets.*"
                                                     r'NETCDF:".*scene.nc":Band2'):
        run_alg("fers:rx", {"INPUT": path, "OUTPUT": str(tmp_path / "out.tif")})
    subdataset = f'NETCDF:"{path}":Band1'
    result = run_alg("fers:rx", {"INPUT": subdataset, "OUTPUT": str(tmp_path / "band1.tif")})
    assert read(result["OUTPUT"])[0].shape == (24, 30)
    assert aux_files(tmp_path) == []
    before = (tmp_path / "scene.nc").read_bytes()
    with pytest.raises(QgsProcessingException, match="is the same file as"):  # the subdataset's container
        run_alg("fers:rx", {"INPUT": subdataset, "OUTPUT": path})
    assert (tmp_path / "scene.nc").read_bytes() == before


def test_import_checkpoint_on_a_file_says_it_is_a_file(run_alg, tmp_path):
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    (folder / "convh.pt").write_bytes(b"PK\x03\x04")
    with pytest.raises(QgsProcessingException, match=r"convh.pt is a file, not a checkpoint folder: choose the folder "
                                                     r"that holds .* convh.pt, enc.pt and pc.pt"):
        run_alg("fers:import_checkpoint", {"FOLDER": str(folder / "convh.pt"),
                                           "OUTPUT_MODEL": str(tmp_path / "model.pt")})
    assert not (tmp_path / "model.pt").exists()


def test_model_outputs_must_be_pt_files_and_never_replace_a_file_of_the_inputs(run_alg, tmp_path):
    from fers.fers_core.enhance.model_file import random_init_model

    from .core.enhance.test_model_file import write_authors_folder

    folder = write_authors_folder(tmp_path / "checkpoint", random_init_model(5, seed=0, branches=("spectral",)))
    (folder / "README").write_text("notes")
    for name in ("README", "README.txt"):
        with pytest.raises(QgsProcessingException, match=rf"^The model file '.*{name}' does not end in \.pt"):
            run_alg("fers:import_checkpoint", {"FOLDER": str(folder), "OUTPUT_MODEL": str(folder / name)})
    assert (folder / "README").read_text() == "notes" and not (folder / "README.txt").exists()
    nested = tmp_path / "models" / "imported" / "m.pt"
    assert run_alg("fers:import_checkpoint", {"FOLDER": str(folder), "OUTPUT_MODEL": str(nested)})["SUMMARY"] \
        .startswith("5 bands")
    source = write_cube(tmp_path / "cube.tif", cube())
    truth = write_cube(tmp_path / "cube_gt.tif", np.zeros((20, 24), np.uint8))
    with pytest.raises(QgsProcessingException, match=r"^OUTPUT_MODEL '.*cube_gt.tif' does not end in \.pt"):
        run_alg("fers:train", {**TINY_TRAINING, "INPUTS": [source], "OUTPUT_MODEL": truth})
    assert read(truth)[0].shape == (20, 24)


# ---------------------------------------------------------------------------------------------
# Grids


@pytest.fixture
def shifted_mask(tmp_path):
    """A cube and a mask of its size and CRS whose origin is 2 pixels east."""
    source = write_cube(tmp_path / "cube.tif", cube())
    shifted = (GEOTRANSFORM[0] + 20.0,) + GEOTRANSFORM[1:]
    return source, write_cube(tmp_path / "mask.tif", np.zeros((20, 24), np.uint8), geotransform=shifted)


@pytest.mark.parametrize("algorithm", ["fers:rx", "fers:detect"])
def test_a_mask_on_another_grid_is_refused(run_alg, tmp_path, model_file, shifted_mask, algorithm):
    source, mask = shifted_mask
    with pytest.raises(QgsProcessingException, match=r"The mask has the input's size but not its grid: its origin "
                                                     r"is \+2 columns .*gdalwarp -r near -te"):
        run_alg(algorithm, {"INPUT": source, "MASK": mask, "MODEL": model_file, "OUTPUT": str(tmp_path / "o.tif")})
    assert not (tmp_path / "o.tif").exists()


def test_evaluate_and_train_refuse_masks_on_another_grid(run_alg, tmp_path, shifted_mask):
    source, mask = shifted_mask
    truth_values = np.zeros((20, 24), np.uint8)
    truth_values[3:6, 3:6] = 1
    truth = write_cube(tmp_path / "truth.tif", truth_values)
    scores = write_cube(tmp_path / "scores.tif", cube(1)[0])
    with pytest.raises(QgsProcessingException, match="The mask 'mask.tif' has the ground truth's size but not its"):
        run_alg("fers:evaluate", {"SCORES": [scores], "GROUND_TRUTH": truth, "MASK": mask,
                                  "OUTPUT_HTML": str(tmp_path / "report.html")})
    with pytest.raises(QgsProcessingException, match="cube.tif: The mask has the input's size but not its grid"):
        run_alg("fers:train", {**TINY_TRAINING, "INPUTS": [source], "MASKS": [mask],
                               "OUTPUT_MODEL": str(tmp_path / "m.pt")})
    assert not (tmp_path / "report.html").exists() and not (tmp_path / "m.pt").exists()


# ---------------------------------------------------------------------------------------------
# Output formats


@pytest.mark.slow
@pytest.mark.parametrize("name, match", [("scores.vrt", "a VRT"), ("scores.asc", "gdal_translate -of AAIGrid"),
                                         ("scores.xyz", "can only be copied whole")])
def test_outputs_the_engine_cannot_write_are_refused(run_alg, tmp_path, name, match):
    source = write_cube(tmp_path / "cube.tif", cube())
    out = tmp_path / "out"
    with pytest.raises(QgsProcessingException, match=match):
        run_alg("fers:rx", {"INPUT": source, "OUTPUT": str(out / name)})
    status, log = qgis_process("fers:rx", INPUT=source, OUTPUT=str(out / name))
    assert status != 0 and match in log
    assert not out.exists() or list(out.iterdir()) == []


def test_an_img_output_is_erdas_imagine_and_the_temporary_default_still_works(run_alg, tmp_path):
    source = write_cube(tmp_path / "cube.tif", cube())
    result = run_alg("fers:rx", {"INPUT": source, "OUTPUT": str(tmp_path / "scores.img")})
    assert gdal.Open(result["OUTPUT"]).GetDriver().ShortName == "HFA"
    temporary = run_alg("fers:rx", {"INPUT": source, "OUTPUT": "TEMPORARY_OUTPUT"})["OUTPUT"]
    assert temporary.endswith(".tif") and gdal.Open(temporary).GetDriver().ShortName == "GTiff"
    np.testing.assert_array_equal(read(result["OUTPUT"])[0], read(temporary)[0])


def test_a_multiband_netcdf_cube_output_is_refused_before_any_pass(run_alg, tmp_path, model_file):
    source = write_cube(tmp_path / "cube.tif", cube())
    with pytest.raises(QgsProcessingException, match="The spectral cube output .* has 16 bands, but GDAL writes each "
                                                     "band of a netCDF as its own variable"):
        run_alg("fers:detect", {"INPUT": source, "MODEL": model_file, "OUTPUT": str(tmp_path / "scores.nc"),
                                "OUTPUT_SPECTRAL": str(tmp_path / "spectral.nc")})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cube.tif"]


# ---------------------------------------------------------------------------------------------
# Nothing beside the inputs


@pytest.fixture
def scene_folder(tmp_path):
    """A folder of inputs: a cube, its ground truth, a score raster and a mask (all 20x24)."""
    folder = tmp_path / "inputs"
    folder.mkdir()
    truth_values = np.zeros((20, 24), np.uint8)
    truth_values[4:7, 4:7] = 1
    return {
        "cube": write_cube(folder / "cube.tif", cube(8)),
        "truth": write_cube(folder / "truth.tif", truth_values),
        "scores": write_cube(folder / "scores.tif", cube(1, seed=1)[0]),
        "mask": write_cube(folder / "mask.tif", np.zeros((20, 24), np.uint8)),
        "small": write_cube(folder / "small.tif", np.zeros((10, 10), np.uint8)),
        "folder": folder,
    }


def runs(inputs, out, model_file):
    """(algorithm, parameters, succeeds) of every algorithm: a run that works and runs refused at the parameter
    check (QGIS's own) and by the engine."""
    cube_, truth, scores, mask, small = (inputs[key] for key in ("cube", "truth", "scores", "mask", "small"))
    checkpoint = inputs["folder"] / "checkpoint"
    return [
        ("fers:rx", {"INPUT": cube_, "MASK": mask, "OUTPUT": str(out / "rx.tif")}, True),
        ("fers:rx", {"INPUT": cube_, "MASK": small, "OUTPUT": str(out / "rx-refused.tif")}, False),
        ("fers:detect", {"INPUT": cube_, "MASK": mask, "MODEL": model_file, "DEVICE": 1,
                         "OUTPUT": str(out / "detect.tif")}, True),
        ("fers:detect", {"INPUT": cube_, "MODEL": model_file, "TILE_SIZE": 1, "OUTPUT": str(out / "d.tif")}, False),
        ("fers:evaluate", {"SCORES": [scores, cube_], "GROUND_TRUTH": truth, "MASK": mask,
                           "OUTPUT_HTML": str(out / "report.html")}, True),
        ("fers:evaluate", {"SCORES": [scores], "GROUND_TRUTH": small, "OUTPUT_HTML": str(out / "r2.html")}, False),
        ("fers:train", {**TINY_TRAINING, "INPUTS": [cube_], "MASKS": [mask],
                        "OUTPUT_MODEL": str(out / "model.pt")}, True),
        ("fers:train", {**TINY_TRAINING, "INPUTS": [cube_], "MASKS": [mask], "MODEL_BANDS": 1,
                        "OUTPUT_MODEL": str(out / "refused.pt")}, False),
        ("fers:train", {**TINY_TRAINING, "INPUTS": [cube_], "MASKS": [small],
                        "OUTPUT_MODEL": str(out / "refused2.pt")}, False),
        ("fers:import_checkpoint", {"FOLDER": str(checkpoint), "OUTPUT_MODEL": str(out / "imported.pt")}, True),
        ("fers:import_checkpoint", {"FOLDER": cube_, "OUTPUT_MODEL": str(out / "imported2.pt")}, False),
    ]


def write_checkpoint(folder):
    from fers.fers_core.enhance.model_file import random_init_model

    from .core.enhance.test_model_file import write_authors_folder

    write_authors_folder(folder, random_init_model(MODEL_BANDS, seed=0, branches=("spectral",)))


@pytest.mark.slow
def test_no_run_leaves_aux_xml_beside_its_inputs_in_process(run_alg, tmp_path, scene_folder, model_file):
    write_checkpoint(scene_folder["folder"] / "checkpoint")
    before = sorted(os.listdir(scene_folder["folder"]))
    for algorithm, parameters, succeeds in runs(scene_folder, tmp_path / "out", model_file):
        if succeeds:
            run_alg(algorithm, parameters)
        else:
            with pytest.raises(QgsProcessingException):
                run_alg(algorithm, parameters)
        assert aux_files(scene_folder["folder"]) == [], (algorithm, parameters)
    assert sorted(os.listdir(scene_folder["folder"])) == before


@pytest.mark.slow
def test_no_run_leaves_aux_xml_beside_its_inputs_through_qgis_process(tmp_path, scene_folder, model_file):
    write_checkpoint(scene_folder["folder"] / "checkpoint")
    before = sorted(os.listdir(scene_folder["folder"]))
    for algorithm, parameters, succeeds in runs(scene_folder, tmp_path / "out", model_file):
        status, log = qgis_process(algorithm, **parameters)
        assert (status == 0) == succeeds, (algorithm, parameters, log[-2000:])
        assert aux_files(scene_folder["folder"]) == [], (algorithm, parameters)
    assert sorted(os.listdir(scene_folder["folder"])) == before


# ---------------------------------------------------------------------------------------------
# A silent scheduler


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("distributed") is None, reason="dask.distributed is not installed")
def test_a_scheduler_that_never_answers_stops_fers_rx_with_a_sentence(run_alg, tmp_path, monkeypatch):
    monkeypatch.setenv("FERS_SCHEDULER_TIMEOUT_S", "2")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted = []
    threading.Thread(target=lambda: accepted.append(server.accept()[0]), daemon=True).start()
    source = write_cube(tmp_path / "cube.tif", cube())
    started = time.monotonic()
    try:
        with pytest.raises(QgsProcessingException, match="accepted the connection but did not answer within 2 s"):
            run_alg("fers:rx", {"INPUT": source, "SCHEDULER": f"tcp://127.0.0.1:{server.getsockname()[1]}",
                                "OUTPUT": str(tmp_path / "out.tif")})
    finally:
        server.close()
        for connection in accepted:
            connection.close()
    assert time.monotonic() - started < 20
    assert accepted and not (tmp_path / "out.tif").exists()


@pytest.mark.skipif(importlib.util.find_spec("distributed") is None, reason="dask.distributed is not installed")
def test_a_scheduler_address_where_nothing_listens_is_named_at_once(run_alg, tmp_path, monkeypatch):
    monkeypatch.setenv("FERS_SCHEDULER_TIMEOUT_S", "600")  # Dask would retry a refused connection this long
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    source = write_cube(tmp_path / "cube.tif", cube())
    started = time.monotonic()
    with pytest.raises(QgsProcessingException, match=rf"^Cannot reach the Dask scheduler at tcp://127.0.0.1:{port} "
                                                     rf"\(nothing accepts connections at 127.0.0.1:{port}\): check "
                                                     "the address and that 'dask scheduler' is running there"):
        run_alg("fers:rx", {"INPUT": source, "SCHEDULER": f"tcp://127.0.0.1:{port}", "OUTPUT": str(tmp_path / "o.tif")})
    assert time.monotonic() - started < 60 and not (tmp_path / "o.tif").exists()
