"""The PyTorch installer: a real pip install into a QGIS profile with Debian's Python, a failed one, the
network algorithms' canExecute() without PyTorch, and the desktop offer in an offscreen QGIS.

Debian's /usr/bin/python3 has no torch (the .venv has), so QGIS started with it is QGIS without PyTorch.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fers.fers_core.errors import DependencyError
from fers.fers_core.runtime import torch_installer
from fers.fers_core.runtime.qgis_python import find_python, python_candidates
from fers.fers_core.runtime.torch_installer import InstallPlan, activate, failure_reason

from .conftest import ROOT
from .rasters import read, write_cube

SYSTEM_PYTHON = "/usr/bin/python3"
TEST_SPEC = os.environ.get("FERS_TEST_TORCH_SPEC", "torch==2.13.0")  # the CPU wheel pip's configuration serves here
BAD_INDEX = "http://127.0.0.1:9/simple"  # nothing listens on port 9


def system_python_can_install():
    if not os.path.exists(SYSTEM_PYTHON):
        pytest.skip(f"{SYSTEM_PYTHON} is absent")
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import importlib.util, sys; import pip; "
                            "sys.exit(3 if importlib.util.find_spec('torch') else 0)"], capture_output=True)
    if probe.returncode == 3:
        pytest.skip(f"{SYSTEM_PYTHON} already has torch, so QGIS cannot be run without it here")
    if probe.returncode != 0:
        pytest.skip(f"{SYSTEM_PYTHON} has no pip")


def qgis_environment(tmp_path, **extra):
    """Debian's QGIS and Python only: no venv on PATH, a fresh profile, headless Qt."""
    runtime = ROOT / ".run" / "xdg"
    runtime.mkdir(parents=True, exist_ok=True)
    runtime.chmod(0o700)
    environment = {"HOME": str(tmp_path), "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
                   "QT_QPA_PLATFORM": "offscreen", "XDG_RUNTIME_DIR": str(runtime),
                   "QGIS_CUSTOM_CONFIG_PATH": str(tmp_path / "profile"), "QGIS_PLUGINPATH": str(ROOT / ".plugins")}
    environment.update(extra)
    return environment


def profile_folder(tmp_path):
    """The packages folder the plugin uses for the profile qgis_environment(tmp_path) sets up."""
    return torch_installer.packages_folder(tmp_path / "profile" / "profiles" / "default")


def run_script(script, tmp_path, timeout=180, **extra):
    """Run `script` with Debian's Python in a QGIS environment; its last stdout line is JSON."""
    completed = subprocess.run([SYSTEM_PYTHON, "-c", script.replace("PLUGINS", repr(str(ROOT / ".plugins")))],
                               capture_output=True, text=True, timeout=timeout, env=qgis_environment(tmp_path, **extra),
                               cwd=tmp_path)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


QGIS_START = """
import json, sys
sys.path[:0] = [PLUGINS, "/usr/share/qgis/python/plugins"]
from qgis.core import QgsApplication
app = QgsApplication([], GUI)
app.initQgis()
from processing.core.Processing import Processing
Processing.initialize()
import processing
"""


# ---------------------------------------------------------------------------------------------
# The logic, without QGIS


def test_activate_puts_the_folder_before_site_packages_only_when_it_exists(tmp_path):
    path = ["/usr/lib/python311.zip", "/usr/lib/python3.11", "/home/u/.local/lib/python3.11/site-packages",
            "/usr/lib/python3/dist-packages"]
    assert not activate(tmp_path / "absent", path)
    assert activate(tmp_path, path)
    assert path.index(str(tmp_path)) == 2  # after the standard library, before every site-packages
    assert activate(tmp_path, path) and path.count(str(tmp_path)) == 1


def test_python_is_found_beside_qgis_when_sys_executable_is_the_qgis_binary(tmp_path):
    linux = python_candidates(executable="/usr/bin/qgis", base_executable="/usr/bin/qgis", prefix="/usr",
                              system="Linux", version=(3, 11))
    assert linux[:2] == ["/usr/bin/python3.11", "/usr/bin/python3"]
    windows = python_candidates(executable=r"C:\OSGeo4W\bin\qgis-bin.exe", base_executable="",
                                prefix=r"C:\OSGeo4W\apps\Python39", system="Windows", version=(3, 9))
    assert windows[0] == os.path.join(r"C:\OSGeo4W\apps\Python39", "python.exe")
    mac = python_candidates(executable="/Applications/QGIS.app/Contents/MacOS/QGIS", base_executable="",
                            prefix="/Applications/QGIS.app/Contents/Frameworks", system="Darwin", version=(3, 9))
    assert "/Applications/QGIS.app/Contents/MacOS/bin/python3" in mac
    assert python_candidates(executable="/usr/bin/python3", base_executable="", prefix="/usr", system="Linux",
                             version=(3, 11))[0] == "/usr/bin/python3"
    found = find_python([str(tmp_path / "missing"), "/usr/bin/qgis", sys.executable])
    assert found == sys.executable  # the QGIS binary is not a Python; a non-existent path is skipped
    with pytest.raises(DependencyError, match="No Python 3.2 interpreter"):
        find_python([sys.executable], version=(3, 2))


def test_gpu_detection_and_the_build_it_chooses(tmp_path, monkeypatch):
    monkeypatch.delenv(torch_installer.INDEX_VARIABLE, raising=False)
    monkeypatch.delenv(torch_installer.SPEC_VARIABLE, raising=False)
    absent = tmp_path / "no-driver"
    assert not torch_installer.nvidia_gpu_present(which=lambda name: None, driver=absent)
    assert torch_installer.nvidia_gpu_present(which=lambda name: "/usr/bin/nvidia-smi", driver=absent)
    assert torch_installer.nvidia_gpu_present(which=lambda name: None, driver=tmp_path)  # /proc/driver/nvidia
    plan = torch_installer.default_plan(tmp_path, python=sys.executable, gpu=False, system="Linux")
    assert plan.index_url == torch_installer.CPU_INDEX and plan.spec == "torch"
    assert plan.folder == tmp_path / "python" / "fers-packages" / torch_installer.python_tag()
    assert torch_installer.default_plan(tmp_path, python="p", gpu=True, system="Linux").index_url is None
    assert torch_installer.default_plan(tmp_path, python="p", gpu=True, system="Windows").index_url == \
        torch_installer.CUDA_INDEX
    monkeypatch.setenv(torch_installer.INDEX_VARIABLE, "")
    monkeypatch.setenv(torch_installer.SPEC_VARIABLE, "torch==2.13.0")
    plan = torch_installer.default_plan(tmp_path, python="p", gpu=False, system="Linux")
    assert plan.index_url is None and plan.spec == "torch==2.13.0"
    command = plan.command("/t")
    assert command[:6] == ["p", "-m", "pip", "install", "--target", "/t"] and "--index-url" not in command
    assert command[-1] == "torch==2.13.0"


def test_pip_failures_are_told_in_one_sentence(tmp_path):
    plan = InstallPlan(python="/usr/bin/python3", folder=tmp_path / "f" / "python3.11", index_url=None)
    cases = {
        "/usr/bin/python3: No module named pip": "pip is not installed",
        "OSError: [Errno 28] No space left on device": "is full",
        "ERROR: Could not install packages due to an OSError: [Errno 13] Permission denied: '/x'": "permission denied",
        "ERROR: Could not find a version that satisfies the requirement torch (from versions: none)\n"
        "ERROR: No matching distribution found for torch": "has no 'torch' for this Python",
        "WARNING: Retrying (Retry(total=0)) after connection broken by 'NewConnectionError(': Failed to establish "
        "a new connection: [Errno 111] Connection refused')'\nERROR: No matching distribution found for torch":
            "could not be reached",
        "ERROR: something new": "pip failed: something new.",
    }
    for output, expected in cases.items():
        reason = failure_reason(output.splitlines(), plan)
        assert expected in reason, (output, reason)
        assert reason.endswith(".") and reason.count(". ") == 0, reason


def test_packages_the_qgis_python_owns_are_removed_from_the_folder(tmp_path):
    for name in ("numpy", "numpy.libs", "numpy-2.1.0.dist-info", "setuptools", "_distutils_hack", "sympy",
                 "sympy-1.14.0.dist-info", "numpyro"):
        (tmp_path / name).mkdir()
    (tmp_path / "distutils-precedence.pth").write_text("")
    (tmp_path / "log.txt").write_text("")
    with open(tmp_path / "log.txt", "w") as log:
        torch_installer.remove_system_owned(tmp_path, log)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.txt", "numpyro", "sympy", "sympy-1.14.0.dist-info"]


# ---------------------------------------------------------------------------------------------
# Real installs with Debian's Python


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A real install of the CPU wheel into a fresh profile's packages folder; (home folder, result)."""
    system_python_can_install()
    home = tmp_path_factory.mktemp("installed")
    plan = InstallPlan(python=SYSTEM_PYTHON, folder=profile_folder(home), spec=TEST_SPEC, index_url=None)
    plan.folder.mkdir(parents=True)
    (plan.folder / "earlier-install.txt").write_text("replaced by the new install")
    result = torch_installer.install(plan)
    assert result.ok, result.message + "\n" + result.log_path.read_text()[-4000:]
    yield home, result
    shutil.rmtree(plan.root)  # 750 MB that pytest would otherwise keep for three runs


@pytest.mark.slow
def test_real_install_is_used_by_the_plugin_at_start_up_and_keeps_debian_numpy(installed):
    home, result = installed
    folder = result.folder
    assert (folder / "torch").is_dir() and (folder / "sympy").is_dir()
    assert not (folder / "earlier-install.txt").exists()  # an earlier install is replaced, not mixed in
    assert not [p.name for p in folder.iterdir() if p.name.split("-")[0].split(".")[0] in ("numpy", "setuptools")]
    assert not [p for p in folder.parent.iterdir() if "staging" in p.name]
    assert "OK: PyTorch" in result.log_path.read_text()
    script = QGIS_START.replace("GUI", "False") + """
import fers
plugin = fers.classFactory(None)
plugin.initProcessing()
import numpy, torch
from osgeo import gdal_array
cube = gdal_array.OpenArray(numpy.arange(75, dtype="float32").reshape(3, 5, 5)).ReadAsArray()
scores = torch.nn.functional.conv2d(torch.from_numpy(cube)[None], torch.ones(2, 3, 3, 3))
import torch._dynamo  # needs the folder's sympy: Debian 12's 1.11 is too old for it
import sympy
detect = QgsApplication.processingRegistry().algorithmById("fers:detect")
print(json.dumps({"torch": torch.__file__, "numpy": numpy.__file__, "numpy_version": numpy.__version__,
                  "sympy": sympy.__file__, "shape": list(scores.shape), "can_execute": list(detect.canExecute())}))
"""
    seen = run_script(script, home)
    assert seen["torch"].startswith(str(folder))
    assert seen["numpy"].startswith("/usr/lib/python3/dist-packages/") and seen["numpy_version"].startswith("1.")
    assert seen["sympy"].startswith(str(folder))
    assert seen["shape"] == [1, 2, 3, 3]
    assert seen["can_execute"] == [True, ""]


@pytest.mark.slow
def test_after_the_install_qgis_process_runs_fers_detect(installed):
    """The acceptance path: Debian's QGIS, no venv, the profile's PyTorch, the bundled model."""
    from fers.fers_core.synthetic import write_scene

    home, _ = installed
    scene, _ = write_scene(home / "scene.tif", home / "truth.tif", rows=40, cols=50, bands=24, seed=1)
    environment = qgis_environment(home)
    ini = home / "profile" / "profiles" / "default" / "QGIS" / "QGIS3.ini"
    if "fers=true" not in (ini.read_text() if ini.exists() else ""):
        subprocess.run(["/usr/bin/qgis_process.bin", "plugins", "enable", "fers"], env=environment, cwd=home,
                       capture_output=True, timeout=120)
    completed = subprocess.run(["/usr/bin/qgis_process.bin", "run", "fers:detect", "--", f"INPUT={scene}",
                                f"OUTPUT={home / 'scores.tif'}"], env=environment, cwd=home, capture_output=True,
                               text=True, timeout=300)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert read(home / "scores.tif")[0].shape == (40, 50)


@pytest.mark.slow
def test_failed_install_says_why_and_leaves_the_folder_as_it_was(tmp_path):
    system_python_can_install()
    folder = profile_folder(tmp_path)
    folder.mkdir(parents=True)
    (folder / "earlier-install.txt").write_text("kept")
    plan = InstallPlan(python=SYSTEM_PYTHON, folder=folder, spec=TEST_SPEC, index_url=BAD_INDEX, timeout_s=2,
                       retries=0, isolated=True)  # only the bad index: no pip.conf, no PIP_FIND_LINKS
    lines = []
    result = torch_installer.install(plan, on_line=lines.append)
    assert not result.ok
    assert result.message.startswith(f"The package index {BAD_INDEX} could not be reached (Connection refused)")
    assert result.message.count(". ") == 0 and result.message.endswith(".")
    assert sorted(p.name for p in folder.parent.iterdir()) == ["install.log", folder.name]
    assert [p.name for p in folder.iterdir()] == ["earlier-install.txt"]
    assert "FAILED: The package index" in result.log_path.read_text()
    assert lines[0].startswith(f"$ {SYSTEM_PYTHON} -m pip install --target")


@pytest.mark.slow
def test_cancelled_install_leaves_nothing(tmp_path):
    system_python_can_install()
    plan = InstallPlan(python=SYSTEM_PYTHON, folder=profile_folder(tmp_path), spec=TEST_SPEC, index_url=None)
    lines = []
    result = torch_installer.install(plan, on_line=lines.append, is_cancelled=lambda: len(lines) > 2)
    assert not result.ok and result.message == "The install was cancelled; nothing was installed."
    assert [p.name for p in plan.root.iterdir()] == ["install.log"]


# ---------------------------------------------------------------------------------------------
# QGIS without PyTorch


@pytest.mark.slow
def test_without_torch_the_network_algorithms_cannot_execute_and_say_how_to_install_it(tmp_path):
    system_python_can_install()
    source = tmp_path / "cube.tif"
    write_cube(source, np.random.default_rng(0).normal(50, 5, (4, 12, 15)).astype("f4"))
    script = QGIS_START.replace("GUI", "False") + f"""
import fers
plugin = fers.classFactory(None)
plugin.initProcessing()
registry = QgsApplication.processingRegistry()
states = {{name: list(registry.algorithmById(name).canExecute())
          for name in ("fers:detect", "fers:train", "fers:import_checkpoint", "fers:rx", "fers:evaluate",
                       "fers:detect_mask_polygons_report")}}
result = processing.run("fers:rx", {{"INPUT": {str(source)!r}, "OUTPUT": {str(tmp_path / 'rx.tif')!r}}})
print(json.dumps({{"states": states, "rx": result["OUTPUT"]}}))
"""
    seen = run_script(script, tmp_path)
    folder = profile_folder(tmp_path)
    for name in ("fers:detect", "fers:train", "fers:import_checkpoint", "fers:detect_mask_polygons_report"):
        ok, message = seen["states"][name]
        assert ok is False, name
        assert message.startswith("The FERS networks need PyTorch, which is not installed"), message
        assert "Plugins > FERS > Install PyTorch" in message
        assert f'/usr/bin/python3 -m pip install --target "{folder}" torch' in message
    assert seen["states"]["fers:rx"] == [True, ""] and seen["states"]["fers:evaluate"] == [True, ""]
    assert read(seen["rx"])[0].shape == (12, 15)


DESKTOP = """
from qgis.gui import QgsMessageBar
from qgis.PyQt.QtCore import QEventLoop, QTimer
from qgis.PyQt.QtWidgets import QMainWindow, QPushButton


class Desktop:
    '''The parts of QgisInterface the plugin uses, with real widgets.'''

    def __init__(self):
        self.window = QMainWindow()
        self.bar = QgsMessageBar(self.window)
        self.menus = {}

    def mainWindow(self):
        return self.window

    def messageBar(self):
        return self.bar

    def addPluginToMenu(self, menu, action):
        self.menus.setdefault(menu, []).append(action)

    def removePluginMenu(self, menu, action):
        self.menus[menu].remove(action)


desktop = Desktop()
import fers
plugin = fers.classFactory(desktop)
plugin.initGui()
offer = desktop.bar.currentItem()
button = offer.findChild(QPushButton, "fers_install_torch")
button.click()
dialog = plugin.installer
shown = dialog.isVisible()
intro = dialog.intro.text()
dialog.close()
ok, refusal = QgsApplication.processingRegistry().algorithmById("fers:detect").canExecute()
from processing.gui.MessageDialog import MessageDialog  # what the Toolbox shows when canExecute() refuses
from qgis.PyQt.QtCore import QUrl
message_dialog = MessageDialog()
message_dialog.setMessage(refusal)
message_dialog.txtMessage.anchorClicked.emit(QUrl("fers:install-torch"))  # the link is clicked
dialog = plugin.installer
shown_from_link = dialog.isVisible()
loop = QEventLoop()
dialog.finished_install.connect(loop.quit)
QTimer.singleShot(120000, loop.quit)
dialog.install_button.click()
dialog.close()  # the install goes on as a QGIS task; its end is told in the message bar
loop.exec_()
result = dialog.result
told = desktop.bar.currentItem().text()
plugin.unload()
second = fers.classFactory(desktop)
second.initGui()  # a second start in the same session: no second offer
rx = processing.run("fers:rx", {"INPUT": RX_SOURCE, "OUTPUT": RX_OUTPUT})["OUTPUT"]
print(json.dumps({"offer": offer.text(), "shown": shown, "intro": intro, "refusal": refusal,
                  "shown_from_link": shown_from_link, "ok": result.ok, "message": result.message, "told": told,
                  "status": dialog.status.text(), "output": dialog.output.toPlainText(),
                  "items": len(desktop.bar.items()),
                  "menu": [a.text() for a in desktop.menus["&FERS"]], "rx": rx}))
"""


@pytest.mark.slow
def test_desktop_offers_the_install_and_a_failed_install_leaves_qgis_working(tmp_path):
    """The start-up offer in the message bar opens the installer, and so does the link in the Toolbox's
    refusal; the installer's task runs pip (here against an index that does not answer) and shows the
    reason; QGIS then still runs fers:rx."""
    system_python_can_install()
    source = write_cube(tmp_path / "cube.tif", np.random.default_rng(0).normal(50, 5, (4, 12, 15)).astype("f4"))
    script = (QGIS_START.replace("GUI", "True") + DESKTOP).replace("RX_SOURCE", repr(str(source))).replace(
        "RX_OUTPUT", repr(str(tmp_path / "rx.tif")))
    seen = run_script(script, tmp_path, FERS_TORCH_INDEX_URL=BAD_INDEX, FERS_TORCH_SPEC=TEST_SPEC,
                      PIP_CONFIG_FILE=os.devnull, PIP_RETRIES="0", PIP_TIMEOUT="2")
    folder = profile_folder(tmp_path)
    assert "need PyTorch, which is not installed" in seen["offer"]
    assert seen["shown"] and str(folder) in seen["intro"] and "no administrator rights" in seen["intro"]
    assert seen["refusal"].endswith('<a href="fers:install-torch">Install PyTorch now</a>')
    assert seen["shown_from_link"]
    assert seen["ok"] is False
    assert seen["message"].startswith(f"The package index {BAD_INDEX} could not be reached")
    assert seen["status"].startswith(seen["message"]) and "QGIS is unchanged" in seen["status"]
    assert "-m pip install --target" in seen["output"] and "No matching distribution" in seen["output"]
    assert seen["told"] == seen["message"]
    assert seen["items"] == 2  # the offer, made once, and the result
    assert seen["menu"] == ["Install PyTorch…"]
    assert not folder.exists() and [p.name for p in folder.parent.iterdir()] == ["install.log"]
    assert read(Path(seen["rx"]))[0].shape == (12, 15)
