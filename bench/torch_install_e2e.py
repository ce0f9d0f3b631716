"""End to end: a new user on Debian 12 without PyTorch installs it from the plugin's offer, then runs fers:detect.

Steps, each timed: `make package`'s zip is unpacked into a fresh QGIS profile's python/plugins; the real
QGIS desktop (/usr/bin/qgis under Xvfb, Debian's Python, no venv) starts with the plugin enabled and a
script (--code) clicks the offer's "Install PyTorch…" button and then the dialog's Install button, waits
for the install task and runs fers:detect in the same session; then qgis_process runs fers:detect in a
new process (as after a restart). Prints a Markdown table.

Usage: .venv/bin/python bench/torch_install_e2e.py [--spec torch==2.13.0] [--index-url URL]
(--index-url '' = pip's configured index; the defaults are this machine's: the CPU wheel pip serves here,
since download.pytorch.org is not reachable from it.)
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GUI_SCRIPT = r"""
import json, time
from qgis.core import QgsApplication
from qgis.PyQt.QtCore import QEventLoop, QTimer
from qgis.PyQt.QtWidgets import QPushButton
from qgis.utils import iface, plugins
import processing

report = {}
try:
    item = next(i for i in iface.messageBar().items() if "PyTorch" in i.text())
    report["offer"] = item.text()
    start = time.monotonic()
    item.findChild(QPushButton, "fers_install_torch").click()
    dialog = plugins["fers"].installer
    loop = QEventLoop()
    dialog.finished_install.connect(loop.quit)
    QTimer.singleShot(1800 * 1000, loop.quit)
    dialog.install_button.click()
    loop.exec_()
    report["install_s"] = time.monotonic() - start
    report["result"] = dialog.status.text()
    report["ok"] = bool(dialog.result and dialog.result.ok)
    start = time.monotonic()
    done = processing.run("fers:detect", {"INPUT": SCENE, "OUTPUT": SAME_SESSION_OUTPUT})
    report["detect_same_session_s"] = time.monotonic() - start
    report["detect_same_session"] = done["OUTPUT"]
except Exception as error:
    report["error"] = repr(error)
open(REPORT, "w").write(json.dumps(report))
QTimer.singleShot(0, iface.actionExit().trigger)
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="torch==2.13.0")
    parser.add_argument("--index-url", default="")
    parser.add_argument("--keep", action="store_true", help="keep the temporary profile (about 800 MB)")
    arguments = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fers-e2e-"))
    try:
        return run(arguments, work)
    finally:
        if not arguments.keep:
            shutil.rmtree(work, ignore_errors=True)


def run(arguments, work):
    from fers_core.runtime.torch_installer import packages_folder
    from fers_core.synthetic import write_scene

    profile = work / "qgis" / "profiles" / "default"
    runtime = work / "xdg"
    runtime.mkdir(mode=0o700)
    times = {}

    start = time.monotonic()
    packaged = subprocess.run([sys.executable, str(ROOT / "scripts" / "package.py")], capture_output=True, text=True,
                              check=True, cwd=ROOT).stdout.split(" (")[0].strip()
    times["make package"] = time.monotonic() - start
    start = time.monotonic()
    with zipfile.ZipFile(packaged) as archive:
        archive.extractall(profile / "python" / "plugins")
    (profile / "QGIS").mkdir(parents=True)
    (profile / "QGIS" / "QGIS3.ini").write_text("[PythonPlugins]\nfers=true\n")
    times["plugin unpacked into the fresh profile"] = time.monotonic() - start
    scene, _ = write_scene(work / "scene.tif", work / "truth.tif", rows=160, cols=200, bands=120, seed=0)
    environment = {"HOME": str(work), "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
                   "XDG_RUNTIME_DIR": str(runtime), "QGIS_CUSTOM_CONFIG_PATH": str(work / "qgis"),
                   "FERS_TORCH_SPEC": arguments.spec, "FERS_TORCH_INDEX_URL": arguments.index_url}
    for name in ("PIP_FIND_LINKS", "PIP_CERT", "PIP_DEFAULT_TIMEOUT", "PIP_DISABLE_PIP_VERSION_CHECK"):
        if name in os.environ:  # pip's configuration here (local wheels), as a user's pip.conf would
            environment[name] = os.environ[name]
    pip_conf = Path.home() / ".config" / "pip" / "pip.conf"
    if pip_conf.exists():
        environment["PIP_CONFIG_FILE"] = str(pip_conf)
    report_path = work / "gui.json"
    script = work / "gui.py"
    script.write_text(GUI_SCRIPT.replace("SCENE", repr(str(scene))).replace(
        "SAME_SESSION_OUTPUT", repr(str(work / "scores_same_session.tif"))).replace("REPORT", repr(str(report_path))))
    start = time.monotonic()
    subprocess.run(["xvfb-run", "-a", "-s", "-screen 0 1280x1024x24", "/usr/bin/qgis", "--nologo",
                    "--noversioncheck", "--code", str(script)], env=environment, cwd=work, capture_output=True,
                   timeout=2400)
    times["QGIS desktop: start, offer, install, fers:detect, quit"] = time.monotonic() - start
    gui = json.loads(report_path.read_text())
    if "error" in gui or not gui.get("ok"):
        print(json.dumps(gui, indent=1))
        return 1
    times["  of which the install (click to PyTorch usable)"] = gui["install_s"]
    times["  of which fers:detect in the same session (160x200x120)"] = gui["detect_same_session_s"]
    start = time.monotonic()
    completed = subprocess.run(["/usr/bin/qgis_process.bin", "run", "fers:detect", "--", f"INPUT={scene}",
                                f"OUTPUT={work / 'scores.tif'}"], env=dict(environment, QT_QPA_PLATFORM="offscreen"),
                               cwd=work, capture_output=True, text=True, timeout=600)
    times["qgis_process run fers:detect after the restart (160x200x120)"] = time.monotonic() - start
    if completed.returncode != 0:
        print(completed.stdout[-2000:], completed.stderr[-2000:])
        return 1
    folder = packages_folder(profile)
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6
    print(f"Offer: {gui['offer']}\nResult: {gui['result']}\nFolder: {folder} ({size:.0f} MB)\n")
    print("| step | seconds |\n|---|---|")
    for step, seconds in times.items():
        print(f"| {step} | {seconds:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
