"""Never lose the user's data, through processing.run and qgis_process: outputs that alias inputs (every
algorithm, several spellings, hard links), two outputs on one file, output locations that cannot work, a full
disk and a file-size limit, two concurrent runs on one output, SIGTERM and Ctrl+C mid-run, and the temporaries
a killed run leaves (removed by the next run)."""

import hashlib
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from osgeo import gdal
from qgis.core import QgsProcessingException

from .conftest import ROOT, TEST_MODEL_BANDS, read_only_folder
from .rasters import read, write_cube

QGIS_PROCESS = str(ROOT / "scripts" / "qgis_process")
MODEL_BANDS = TEST_MODEL_BANDS  # the shared model_file fixture's (conftest)


def cube(bands=6, rows=20, cols=24, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((bands, rows, cols)) + 100).astype(np.float32)


def digest(folder):
    """{relative path: sha256} of every file under folder."""
    found = {}
    for base, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(base, name)
            with open(path, "rb") as stream:
                found[os.path.relpath(path, folder)] = hashlib.sha256(stream.read()).hexdigest()
    return found


def qgis_process(algorithm, parameters, file_limit_kb=None, timeout=180, **popen):
    """scripts/qgis_process run ALGORITHM -- KEY=VALUE ... (under `ulimit -f` when file_limit_kb is given)."""
    command = [QGIS_PROCESS, "run", algorithm, "--", *[f"{key}={value}" for key, value in parameters.items()]]
    if file_limit_kb is not None:
        command = ["bash", "-c", f'ulimit -f {int(file_limit_kb)}; exec "$@"', "bash", *command]
    if popen:
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)
    completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    return completed.returncode, completed.stdout + completed.stderr


@pytest.fixture
def scene(tmp_path):
    """in/scene.tif (6 bands), in/mask.tif, in/truth.tif, in/scores.tif; out/ empty."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    (tmp_path / "out").mkdir()
    mask = np.zeros((20, 24), np.uint8)
    mask[2:4, 2:4] = 1
    truth = np.zeros((20, 24), np.uint8)
    truth[5:7, 5:7] = 1
    return {
        "scene": write_cube(inputs / "scene.tif", cube()),
        "mask": write_cube(inputs / "mask.tif", mask),
        "truth": write_cube(inputs / "truth.tif", truth),
        "scores": write_cube(inputs / "scores.tif", np.random.default_rng(1).random((20, 24)).astype(np.float32)),
        "folder": tmp_path,
    }


# --- outputs on inputs ---------------------------------------------------------------------------------------------

def aliasing_cases(scene, model_file):
    """(algorithm, parameters, output parameter, input parameter) where the output is an input's file."""
    from fers.fers_core.enhance.model_file import random_init_model

    from .core.enhance.test_model_file import write_authors_folder

    folder = scene["folder"]
    envi = str(folder / "in" / "scene.bsq")
    gdal.Translate(envi, scene["scene"], format="ENVI")
    os.link(scene["scene"], folder / "in" / "hard.tif")
    checkpoint = write_authors_folder(folder / "in" / "checkpoint", random_init_model(MODEL_BANDS, seed=1))
    spelled = str(folder / "out" / ".." / "in" / "." / "scene.tif")
    rx = {"INPUT": scene["scene"], "OUTPUT": str(folder / "out" / "rx.tif")}
    detect = {**rx, "MODEL": model_file}
    train = {"INPUTS": [scene["scene"]], "OUTPUT_MODEL": str(folder / "out" / "m.pt"), "EPOCHS": 1,
             "MODEL_BANDS": MODEL_BANDS, "STAGES": 1}
    evaluate = {"SCORES": [scene["scores"]], "GROUND_TRUTH": scene["truth"],
                "OUTPUT_HTML": str(folder / "out" / "r.html")}
    return [
        ("fers:rx", {**rx, "OUTPUT": scene["scene"]}, "OUTPUT", "INPUT"),
        ("fers:rx", {**rx, "OUTPUT": spelled}, "OUTPUT", "INPUT"),
        ("fers:rx", {**rx, "OUTPUT": str(folder / "in" / "hard.tif")}, "OUTPUT", "INPUT"),
        ("fers:rx", {**rx, "INPUT": envi, "OUTPUT": envi}, "OUTPUT", "INPUT"),
        ("fers:rx", {**rx, "INPUT": envi, "OUTPUT": str(folder / "in" / "scene.dat")}, "OUTPUT", "INPUT"),
        ("fers:rx", {**rx, "MASK": scene["mask"], "OUTPUT": scene["mask"]}, "OUTPUT", "MASK"),
        ("fers:rx", {**rx, "OUTPUT_MASK": scene["scene"]}, "OUTPUT_MASK", "INPUT"),
        ("fers:detect", {**detect, "OUTPUT": spelled}, "OUTPUT", "INPUT"),
        ("fers:detect", {**detect, "OUTPUT_SPECTRAL": scene["scene"]}, "OUTPUT_SPECTRAL", "INPUT"),
        ("fers:detect", {**detect, "OUTPUT": model_file}, "OUTPUT", "MODEL"),
        ("fers:train", {**train, "OUTPUT_MODEL": scene["scene"]}, "OUTPUT_MODEL", "INPUTS"),
        ("fers:train", {**train, "INIT_MODEL": model_file, "OUTPUT_MODEL": model_file}, "OUTPUT_MODEL", "INIT_MODEL"),
        ("fers:import_checkpoint", {"FOLDER": str(checkpoint), "OUTPUT_MODEL": str(checkpoint / "convh.pt")},
         "OUTPUT_MODEL", "FOLDER"),
        ("fers:evaluate", {**evaluate, "OUTPUT_HTML": scene["scores"]}, "OUTPUT_HTML", "SCORES"),
        ("fers:evaluate", {**evaluate, "OUTPUT_CSV": scene["truth"]}, "OUTPUT_CSV", "GROUND_TRUTH"),
        ("fers:evaluate", {**evaluate, "MASK": scene["mask"], "OUTPUT_HTML": scene["mask"]}, "OUTPUT_HTML", "MASK"),
    ]


@pytest.mark.slow
def test_an_output_on_an_input_is_refused_and_the_input_kept(run_alg, scene, model_file):
    cases = aliasing_cases(scene, model_file)
    before = digest(scene["folder"])
    model_before = digest(os.path.dirname(model_file))
    for algorithm, parameters, output, source in cases:
        with pytest.raises(QgsProcessingException, match=rf"{output} '.*' .*is the same file as {source} '.*'"
                                                         ".*would destroy the input"):
            run_alg(algorithm, parameters)
        assert digest(scene["folder"]) == before, (algorithm, parameters)
    assert digest(os.path.dirname(model_file)) == model_before


@pytest.mark.slow
def test_qgis_process_refuses_an_output_on_an_input(scene, model_file):
    cases = aliasing_cases(scene, model_file)
    for algorithm, parameters, _, source in [cases[i] for i in (0, 8, 12, 13)]:
        before = digest(scene["folder"])
        code, log = qgis_process(algorithm, {key: (value[0] if isinstance(value, list) else value)
                                             for key, value in parameters.items()})
        assert code != 0 and f"is the same file as {source}" in log and "Traceback" not in log, log
        assert digest(scene["folder"]) == before


def test_two_outputs_on_one_file_are_refused(run_alg, scene, model_file):
    folder = scene["folder"] / "out"
    same = str(folder / "same.tif")
    cases = [
        ("fers:rx", {"INPUT": scene["scene"], "OUTPUT": same, "OUTPUT_MASK": same}, "OUTPUT_MASK and OUTPUT"),
        ("fers:rx", {"INPUT": scene["scene"], "OUTPUT": same, "OUTPUT_MASK": str(folder / "sub" / ".." / "same.tif")},
         "OUTPUT_MASK and OUTPUT"),
        ("fers:detect", {"INPUT": scene["scene"], "MODEL": model_file, "OUTPUT": same, "OUTPUT_SPECTRAL": same},
         "OUTPUT_SPECTRAL and OUTPUT"),
        ("fers:detect", {"INPUT": scene["scene"], "MODEL": model_file, "OUTPUT": str(folder / "a.tif"),
                         "OUTPUT_SPECTRAL": str(folder / "b.tif"), "OUTPUT_SPATIAL": str(folder / "b.tif")},
         "OUTPUT_SPATIAL and OUTPUT_SPECTRAL"),
        ("fers:evaluate", {"SCORES": [scene["scores"]], "GROUND_TRUTH": scene["truth"], "OUTPUT_HTML": same,
                           "OUTPUT_CSV": same}, "OUTPUT_CSV and OUTPUT_HTML"),
    ]
    for algorithm, parameters, names in cases:
        with pytest.raises(QgsProcessingException, match=f"{names} are the same file .*Give each output its own"):
            run_alg(algorithm, parameters)
        assert os.listdir(folder) == []


# --- output locations ----------------------------------------------------------------------------------------------

def test_output_locations_are_checked_before_the_first_pass(run_alg, scene, model_file):
    folder = scene["folder"]
    blocker = folder / "out" / "afile"
    blocker.write_text("x")
    rx = {"INPUT": scene["scene"], "OUTPUT": str(folder / "out" / "rx.tif")}
    cases = [
        ("fers:rx", {**rx, "OUTPUT": str(folder / "out")}, r"OUTPUT '.*out' is an existing folder: give a file name"),
        ("fers:detect", {**rx, "MODEL": model_file, "OUTPUT": str(folder / "in")}, "OUTPUT '.*in' is an existing "
                                                                                    "folder"),
        ("fers:rx", {**rx, "OUTPUT_MASK": str(blocker / "mask.tif")}, r"folder of OUTPUT_MASK .*afile' is a file"),
        ("fers:rx", {**rx, "OUTPUT_POLYGONS": str(blocker / "sub" / "objects.gpkg")},
         r"output folder of OUTPUT_POLYGONS .*afile' is a file"),
        ("fers:import_checkpoint", {"FOLDER": str(folder / "in"), "OUTPUT_MODEL": str(blocker / "m" / "model.pt")},
         r"output folder of OUTPUT_MODEL .*afile' is a file"),
        ("fers:evaluate", {"SCORES": [scene["scores"]], "GROUND_TRUTH": scene["truth"],
                           "OUTPUT_HTML": str(blocker / "r.html")}, r"output folder of OUTPUT_HTML .*afile' is a file"),
    ]
    virtual = "is on one of GDAL's virtual file systems: outputs are files on disk"  # /vsimem/ vanished at exit
    cases += [("fers:rx", {**rx, "OUTPUT": "/vsimem/o.tif"}, f"OUTPUT '/vsimem/o.tif' {virtual}"),
              ("fers:rx", {**rx, "OUTPUT_MASK": "/vsizip//tmp/out.zip/m.tif"}, f"OUTPUT_MASK .* {virtual}"),
              ("fers:evaluate", {"SCORES": [scene["scores"]], "GROUND_TRUTH": scene["truth"],
                                 "OUTPUT_HTML": "/vsis3/bucket/r.html"}, f"OUTPUT_HTML .* {virtual}")]
    before = digest(folder)
    had = {name for name in os.listdir("/") if name.startswith("vsi")}
    for algorithm, parameters, message in cases:
        with pytest.raises(QgsProcessingException, match=message):
            run_alg(algorithm, parameters)
        assert digest(folder) == before, parameters  # in particular no score raster of the refused run
    assert {name for name in os.listdir("/") if name.startswith("vsi")} == had  # no real /vsizip/... folders


def test_read_only_output_folder(run_alg, scene):
    folder, release = read_only_folder(scene["folder"])
    try:
        with pytest.raises(QgsProcessingException, match="Cannot write to the folder '.*readonly' of OUTPUT"):
            run_alg("fers:rx", {"INPUT": scene["scene"], "OUTPUT": str(folder / "rx.tif")})
    finally:
        release()


@pytest.mark.slow
def test_qgis_process_output_under_a_file(scene):
    blocker = scene["folder"] / "out" / "afile"
    blocker.write_text("x")
    code, log = qgis_process("fers:rx", {"INPUT": scene["scene"], "OUTPUT": str(scene["folder"] / "out" / "rx.tif"),
                                         "OUTPUT_POLYGONS": str(blocker / "objects.gpkg")})
    assert code != 0 and "output folder of OUTPUT_POLYGONS" in log and "Traceback" not in log, log
    assert os.listdir(scene["folder"] / "out") == ["afile"]


# --- full disks ------------------------------------------------------------------------------------------------------

@pytest.fixture
def large_scene(tmp_path):
    """A 400 x 400 x 16 raster: a 0.6 MB score raster, about a second of local RX."""
    (tmp_path / "out").mkdir(exist_ok=True)
    return write_cube(tmp_path / "large.tif", cube(MODEL_BANDS, 400, 400, seed=3))


@pytest.fixture
def medium_scene(tmp_path):
    """A 250 x 250 x 16 raster: about a second of fers:detect, a 4 MB feature spill."""
    (tmp_path / "out").mkdir(exist_ok=True)
    return write_cube(tmp_path / "medium.tif", cube(MODEL_BANDS, 250, 250, seed=4))


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["fers:rx", "fers:detect"])
def test_file_size_limit_through_qgis_process(tmp_path, large_scene, medium_scene, model_file, algorithm):
    parameters = {"INPUT": large_scene, "OUTPUT": str(tmp_path / "out" / "scores.tif")}
    if algorithm == "fers:detect":
        parameters.update(INPUT=medium_scene, MODEL=model_file)  # the feature spill outgrows the limit
    code, log = qgis_process(algorithm, parameters, file_limit_kb=300)
    assert code != 0, log
    assert "the file-size limit was reached" in log and "the limit is 0.3 MB" in log, log
    assert "Traceback" not in log and "Errno" not in log, log
    assert os.listdir(tmp_path / "out") == []


@pytest.mark.slow
def test_a_run_that_fails_late_leaves_none_of_its_outputs(tmp_path):
    """The scores and the mask are written, then the polygons (a GeoPackage of about 100 KB) outgrow the
    file-size limit: the finished scores and mask are deleted too."""
    source = write_cube(tmp_path / "scene.tif", cube(6, 100, 100))
    out = tmp_path / "out"
    out.mkdir()
    code, log = qgis_process("fers:rx", {"INPUT": source, "OUTPUT": str(out / "scores.tif"),
                                         "OUTPUT_MASK": str(out / "mask.tif"),
                                         "OUTPUT_POLYGONS": str(out / "objects.gpkg")}, file_limit_kb=60)
    assert code != 0 and "Mask: " in log, log  # the mask was written before the polygons failed
    assert "Writing '" + str(out / "objects.gpkg") + "' failed: the file-size limit was reached" in log, log
    assert os.listdir(out) == []


def test_a_rerun_cancelled_late_leaves_the_earlier_outputs_as_they_were(run_alg, tmp_path):
    """The scores and the mask of the re-run are in place when the cancel comes: the earlier run's files return,
    and the overviews QGIS built for the earlier scores never attach to new ones."""
    from qgis.core import QgsProcessingFeedback

    first, second = write_cube(tmp_path / "a.tif", cube(6, 60, 60)), write_cube(tmp_path / "b.tif", cube(6, 90, 90, 1))
    out = tmp_path / "out"
    names = {"OUTPUT": "s.tif", "OUTPUT_MASK": "m.tif", "OUTPUT_POLYGONS": "p.gpkg"}
    outputs = {key: str(out / name) for key, name in names.items()}
    run_alg("fers:rx", {"INPUT": first, **outputs})
    overviews = gdal.Open(outputs["OUTPUT"])
    overviews.BuildOverviews("NEAREST", [2])
    overviews = None
    before = digest(out)
    assert "s.tif.ovr" in before

    class CancelAfterTheMask(QgsProcessingFeedback):
        def pushInfo(self, text):  # noqa: N802 (QGIS API)
            if text.startswith("Mask: "):
                self.cancel()

    with pytest.raises(QgsProcessingException, match="Cancelled"):
        run_alg("fers:rx", {"INPUT": second, **outputs}, CancelAfterTheMask())
    assert digest(out) == before
    run_alg("fers:rx", {"INPUT": second, **outputs})
    assert sorted(os.listdir(out)) == ["m.tif", "p.gpkg", "s.tif"]  # the old overviews went with the old scores
    scores = gdal.Open(outputs["OUTPUT"])
    assert scores.GetRasterBand(1).GetOverviewCount() == 0


@pytest.mark.parametrize("output", ["OUTPUT", "OUTPUT_POLYGONS"])
def test_an_output_the_system_will_not_create_is_refused_in_a_sentence(run_alg, scene, output):
    """/proc takes no new files (for root too): no traceback, and no talk of a full disk (it has no size)."""
    parameters = {"INPUT": scene["scene"], "OUTPUT": scene["scene"].replace(".tif", "_s.tif"),
                  output: "/proc/fers-test" + (".gpkg" if output == "OUTPUT_POLYGONS" else ".tif")}
    with pytest.raises(QgsProcessingException) as refused:
        run_alg("fers:rx", parameters)
    message = str(refused.value)
    assert re.match(r"^Cannot (create the (output|polygons) file|write to the folder)", message), message
    assert "Traceback" not in message and "disk is full" not in message


def test_full_disk(run_alg, tmp_path, large_scene):
    from .core.io.test_output_safety import small_file_system

    folder = small_file_system(tmp_path, "300k")
    try:
        with pytest.raises(QgsProcessingException, match=r"Writing '.*scores.tif' failed: the disk is full \(the "
                                                         r"file needs up to about 0.6 MB"):
            run_alg("fers:rx", {"INPUT": large_scene, "OUTPUT": str(folder / "scores.tif")})
        assert os.listdir(folder) == []
    finally:
        subprocess.run(["umount", str(folder)], check=True)


# --- concurrency, signals and killed runs --------------------------------------------------------------------------

def wait_for_temporary(folder, process, pattern=".partial-", written=False):
    """Poll until a temporary file of ours appears in folder (the run is then mid-way); its name.

    `written`: wait until the file holds data too."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found = [name for name in os.listdir(folder) if pattern in name] if os.path.isdir(folder) else []
        found = [name for name in found if not written or os.path.getsize(os.path.join(folder, name)) > 0]
        if found:
            return found[0]
        assert process.poll() is None, process.communicate()[0]
        time.sleep(0.005)
    raise AssertionError(f"no temporary appeared in {folder}")


@pytest.mark.slow
def test_two_concurrent_detect_runs_on_one_output(tmp_path, model_file):
    """Two runs with the same OUTPUT, the second one entirely inside the first one's statistics pass (the first
    is paused there): each keeps its own feature spill, and the final file is exactly one run's result."""
    sources = [write_cube(tmp_path / f"scene{i}.tif", cube(MODEL_BANDS, 200, 200, seed=10 + i)) for i in range(2)]
    alone = [qgis_process("fers:detect", {"INPUT": source, "MODEL": model_file,  # each run on its own output
                                          "OUTPUT": str(tmp_path / f"reference{i}.tif")}, cwd=ROOT)
             for i, source in enumerate(sources)]
    assert [run.communicate(timeout=300) and run.returncode for run in alone] == [0, 0]
    references = [read(tmp_path / f"reference{i}.tif")[0] for i in range(2)]
    assert not np.array_equal(*references)
    shared = tmp_path / "out" / "scores.tif"
    shared.parent.mkdir()
    first = qgis_process("fers:detect", {"INPUT": sources[0], "MODEL": model_file, "OUTPUT": str(shared)}, cwd=ROOT)
    wait_for_temporary(shared.parent, first, ".features.", written=True)  # the first run has spilled features
    first.send_signal(signal.SIGSTOP)
    try:
        code, log = qgis_process("fers:detect", {"INPUT": sources[1], "MODEL": model_file, "OUTPUT": str(shared)})
    finally:
        first.send_signal(signal.SIGCONT)
    first_log = first.communicate(timeout=300)[0]
    assert code == 0 and first.returncode == 0, log + first_log
    assert np.array_equal(read(shared)[0], references[0])  # the first run finished last: its own result
    assert os.listdir(shared.parent) == ["scores.tif"]


@pytest.mark.slow
@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("algorithm", ["fers:rx", "fers:detect"])
def test_signal_mid_run_leaves_nothing(tmp_path, large_scene, medium_scene, model_file, algorithm, number):
    output = tmp_path / "out" / "scores.tif"
    parameters = {"INPUT": large_scene, "OUTPUT": str(output), "OUTPUT_MASK": str(tmp_path / "out" / "mask.tif")}
    if algorithm == "fers:detect":
        parameters.update(INPUT=medium_scene, MODEL=model_file)
    else:
        parameters["MODE"] = 1  # local RX: long enough to be caught mid-way
    process = qgis_process(algorithm, parameters, cwd=ROOT)
    wait_for_temporary(output.parent, process)
    process.send_signal(number)
    log = process.communicate(timeout=120)[0]
    assert process.returncode != 0, log
    if number == signal.SIGINT:
        assert "Interrupted (Ctrl+C)" in log and "Traceback" not in log, log
    assert os.listdir(output.parent) == []


def _interruptible():
    """In the child: Ctrl+C not ignored, even when the suite runs in the background (where a shell ignores
    SIGINT for its children, and the run, rightly, leaves an ignored signal alone)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_mid_run_of_the_command_line(tmp_path, medium_scene, model_file, number):
    out = tmp_path / "batch"
    process = subprocess.Popen([sys.executable, "-m", "fers_core", "batch", medium_scene, "--out-dir", str(out),
                                "--model", model_file], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, preexec_fn=_interruptible)
    wait_for_temporary(out, process)
    process.send_signal(number)
    log = process.communicate(timeout=120)[0]
    assert process.returncode == (130 if number == signal.SIGINT else -signal.SIGTERM), log
    assert os.listdir(out) == []


@pytest.mark.slow
def test_temporaries_of_a_killed_run_are_removed_by_the_next(tmp_path, medium_scene, model_file):
    output = tmp_path / "out" / "scores.tif"
    parameters = {"INPUT": medium_scene, "MODEL": model_file, "OUTPUT": str(output)}
    process = qgis_process("fers:detect", parameters, cwd=ROOT)
    spill = wait_for_temporary(output.parent, process, ".features.partial-")
    process.kill()  # SIGKILL: no handler runs
    process.communicate(timeout=60)
    assert spill in os.listdir(output.parent)
    # a concurrent run's temporaries (a live process) are never touched
    from fers.fers_core.io import atomic

    live = output.parent / f".scores.partial-{atomic.HOST}-{os.getpid()}-0123abcd.tif"
    live.write_bytes(b"in use")
    small = write_cube(tmp_path / "small.tif", cube(MODEL_BANDS, 40, 40))  # the next run: any input, same folder
    code, log = qgis_process("fers:detect", {**parameters, "INPUT": small})
    assert code == 0, log
    assert "that an earlier, interrupted run left" in log and spill in log, log
    assert sorted(os.listdir(output.parent)) == sorted([live.name, "scores.tif"])
