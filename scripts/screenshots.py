"""Remake the README screenshots (docs/screenshots/*.png) from the real QGIS desktop.

    .venv/bin/python scripts/screenshots.py [--keep] [OUTPUT_FOLDER]

--keep leaves the temporary folder (raw pictures, report, QGIS and session logs) in place.

Needs xvfb, chromium and pngquant (apt-get install -y xvfb chromium pngquant). Builds the plugin zip
as `make package` does, installs it into a fresh QGIS profile in a temporary folder (the plugin
enabled, this checkout's .venv first on PATH so QGIS's Python finds PyTorch), writes the demo scene,
and starts QGIS desktop on a virtual X display with scripts/screenshot_session.py, which drives the
Toolbox, the fers:detect dialog (run from the dialog), the map and the Graphical Modeler and writes
the evaluation report. Chromium renders the report. Every picture is cropped and quantised to a
small PNG.
"""

import configparser
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DISPLAY = ":99"
SCREEN = "1600x1000x24"
SESSION_TIMEOUT_S = 600
# raw picture -> (published name, crop as (width, height, x, y) or None, pngquant colours)
PICTURES = {
    "toolbox": ("toolbox.png", None, 64),
    "detect_dialog": ("detect_dialog.png", None, 64),
    "detection": ("detection.png", None, 128),
    "modeler": ("example_model.png", None, 64),
    "report": ("evaluation_report.png", (1040, 665, 0, 0), 64),  # the table and the ROC plot
}


def run(command, **options):
    print("+", " ".join(str(c) for c in command), flush=True)
    return subprocess.run([str(c) for c in command], check=True, **options)


def build_package():
    listed = run([sys.executable, ROOT / "scripts" / "package.py"], capture_output=True, text=True, cwd=ROOT)
    return Path(listed.stdout.split(" (")[0].strip())


def fresh_profile(folder, package):
    """A QGIS profile with the packaged plugin installed and enabled, and no first-run interruptions."""
    profile = folder / "profiles" / "default"
    plugins = profile / "python" / "plugins"
    plugins.mkdir(parents=True)
    with zipfile.ZipFile(package) as archive:
        archive.extractall(plugins)
    settings = configparser.ConfigParser()
    settings.optionxform = str
    settings["PythonPlugins"] = {"fers": "true", "processing": "true"}
    settings["qgis"] = {"checkVersion": "false", "showTips": "false", "allowVersionCheck": "false"}
    settings["core"] = {"NewsFeed\\httpsfeedqgisorg\\disabled": "true"}
    (profile / "QGIS").mkdir()
    with open(profile / "QGIS" / "QGIS3.ini", "w") as stream:
        settings.write(stream, space_around_delimiters=False)
    return folder


def start_display():
    if os.path.exists(f"/tmp/.X11-unix/X{DISPLAY[1:]}"):
        raise SystemExit(f"display {DISPLAY} is in use: stop that X server or change DISPLAY in this script")
    server = subprocess.Popen(["Xvfb", DISPLAY, "-screen", "0", SCREEN, "-nolisten", "tcp"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 20
    while not os.path.exists(f"/tmp/.X11-unix/X{DISPLAY[1:]}"):
        if time.time() > deadline or server.poll() is not None:
            raise SystemExit("Xvfb did not start")
        time.sleep(0.2)
    return server


def qgis_session(work, profile):
    environment = dict(os.environ)
    environment.update(DISPLAY=DISPLAY, QGIS_CUSTOM_CONFIG_PATH=str(profile), FERS_SHOTS_WORK=str(work),
                       XDG_RUNTIME_DIR=str(ROOT / ".run" / "xdg"), QT_QPA_PLATFORM="xcb")
    environment["PATH"] = f"{ROOT / '.venv' / 'bin'}{os.pathsep}{environment.get('PATH', '')}"
    (ROOT / ".run" / "xdg").mkdir(parents=True, exist_ok=True)
    (ROOT / ".run" / "xdg").chmod(0o700)
    with open(work / "qgis.log", "w") as output:
        qgis = subprocess.Popen(["/usr/bin/qgis.bin", "--nologo", "--noversioncheck", "--code",
                                 str(ROOT / "scripts" / "screenshot_session.py")],
                                env=environment, stdout=output, stderr=subprocess.STDOUT, cwd=work,
                                start_new_session=True)
        deadline = time.time() + SESSION_TIMEOUT_S
        try:
            while not ((work / "done").exists() or (work / "failed").exists()):
                if qgis.poll() is not None:
                    break
                if time.time() > deadline:
                    break
                time.sleep(1)
        finally:
            if qgis.poll() is None:
                os.killpg(qgis.pid, signal.SIGTERM)
                try:
                    qgis.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(qgis.pid, signal.SIGKILL)
    log = (work / "session.log").read_text() if (work / "session.log").exists() else "(no session log)"
    print(log)
    if not (work / "done").exists():
        raise SystemExit(f"the QGIS session did not finish; see {work / 'qgis.log'}")


def render_report(work):
    run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
         f"--screenshot={work / 'raw_report.png'}", "--window-size=1040,1010", f"file://{work / 'report.html'}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)


def publish(work, target):
    target.mkdir(parents=True, exist_ok=True)
    for raw, (name, crop, colours) in PICTURES.items():
        source, cropped = work / f"raw_{raw}.png", work / f"crop_{raw}.png"
        if crop:
            width, height, x, y = crop
            run(["convert", source, "-crop", f"{width}x{height}+{x}+{y}", "+repage", cropped])
        else:
            shutil.copy(source, cropped)
        run(["pngquant", "--force", "--strip", "--quality", "60-95", "--speed", "1", str(colours),
             "--output", target / name, cropped])
        print(f"{target / name}: {(target / name).stat().st_size / 1000:.0f} kB")


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    keep = "--keep" in argv
    argv = [a for a in argv if a != "--keep"]
    target = Path(argv[0]) if argv else ROOT / "docs" / "screenshots"
    for tool in ("Xvfb", "chromium", "pngquant", "convert"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing: apt-get install -y xvfb chromium pngquant imagemagick")
    package = build_package()
    temporary = Path(tempfile.mkdtemp(prefix="fers-shots-"))
    try:
        work = temporary / "work"
        work.mkdir()
        run([ROOT / ".venv" / "bin" / "python", "-m", "fers_core", "demo-scene", work / "demo_scene.tif",
             work / "demo_truth.tif"], cwd=ROOT)
        profile = fresh_profile(temporary / "profile", package)
        server = start_display()
        try:
            qgis_session(work, profile)
        finally:
            server.terminate()
            server.wait(20)
        render_report(work)
        publish(work, target)
    finally:
        if keep:
            print(f"kept {temporary}")
        else:
            shutil.rmtree(temporary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
