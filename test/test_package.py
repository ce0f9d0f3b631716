"""Packaging safety: the plugin zip holds runtime files only, loads in QGIS on its own, and the
algorithms write nothing but their outputs (nothing beside their inputs, nothing in the working folder)."""

import configparser
import gc
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import urllib.parse
import zipfile

import numpy as np
import pytest

from .conftest import ROOT, SHARED
from .rasters import read, write_cube

SECRET_PATTERNS = re.compile(
    r"password|passwd|BEGIN [A-Z ]*PRIVATE KEY|token\s*=|api[_-]?key|secret[_-]?key|AKIA[0-9A-Z]{16}"
    r"|gh[pousr]_[A-Za-z0-9]{36}|xox[baprs]-[A-Za-z0-9-]+",
    re.IGNORECASE,
)
FORBIDDEN_PARTS = {"__pycache__", ".venv", ".qgis-profile", ".plugins", ".run", ".git", ".hypothesis",
                   ".pytest_cache", ".ruff_cache", "test", "tests", "bench", "demo", "dist", "shared", "scripts"}
FORBIDDEN_SUFFIXES = (".pyc", ".pyo", ".tif", ".tiff", ".npy", ".npz", ".mat", ".hdr", ".img", ".aux.xml",
                      ".zip", ".gpkg", ".log", ".env", ".pem", ".key")


@pytest.fixture(scope="module")
def package_build():
    """`make package`'s run (its completed process)."""
    completed = subprocess.run([sys.executable, str(ROOT / "scripts" / "package.py")], capture_output=True,
                               text=True, timeout=120, cwd=ROOT)
    assert completed.returncode == 0, completed.stderr
    return completed


@pytest.fixture(scope="module")
def package(package_build):
    """Build the zip as `make package` does; (zip path, its names)."""
    path = package_build.stdout.split(" (")[0].strip()
    with zipfile.ZipFile(path) as archive:
        return path, archive.namelist()


def package_module():
    spec = importlib.util.spec_from_file_location("fers_package_script", ROOT / "scripts" / "package.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_zip_holds_the_plugin_essentials(package):
    _, names = package
    metadata = configparser.ConfigParser()
    metadata.read(ROOT / "metadata.txt")
    for required in ("metadata.txt", "__init__.py", "plugin.py", "installer_gui.py", "LICENSE",
                     metadata["general"]["icon"], "fers_core/runtime/torch_installer.py",
                     "algorithms/provider.py", "fers_core/io/reader.py", "fers_core/pipeline/memory_guard.py"):
        assert f"fers/{required}" in names, required
    assert all(name.startswith("fers/") for name in names)


def test_zip_holds_no_caches_tests_data_or_local_folders(package):
    _, names = package
    for name in names:
        parts = name.split("/")
        assert not FORBIDDEN_PARTS & set(parts[1:-1]), name
        assert not name.lower().endswith(FORBIDDEN_SUFFIXES), name
        assert not parts[-1].startswith(".") or parts[-1] == ".gitignore", name
        if name.endswith(".pt"):
            assert name.startswith("fers/weights/"), name  # only the bundled model


@pytest.mark.slow
def test_zip_holds_no_secrets(package):
    path, names = package
    with zipfile.ZipFile(path) as archive:
        for name in names:
            text = archive.read(name).decode("utf-8", errors="ignore")
            found = SECRET_PATTERNS.search(text)
            assert found is None, f"{name}: {found.group(0)!r}"


# What plugins.qgis.org checks on upload (QGIS-Django, qgis-app/plugins/validator.py), and what QGIS's own
# metadata reader (qgis.utils.findPlugins: configparser with interpolation) needs.
REPOSITORY_MAX_BYTES = 25_000_000
REPOSITORY_REQUIRED = ("name", "description", "version", "qgisMinimumVersion", "author", "email", "about",
                       "tracker", "repository")
UNINFORMATIVE_TAGS = {"processing", "raster", "vector", "python", "plugin", "qgis", "tool", "tools"}


def zip_metadata(path):
    """metadata.txt as the plugin repository parses it from the zip (keys case-sensitive)."""
    with zipfile.ZipFile(path) as archive:
        text = archive.read("fers/metadata.txt").decode("utf-8")
    parser = configparser.ConfigParser()
    parser.optionxform = str
    parser.read_string(text)
    return parser, text


def test_zip_passes_the_plugin_repository_archive_checks(package):
    path, names = package
    assert os.path.getsize(path) <= REPOSITORY_MAX_BYTES
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
    for name in names:
        assert ".." not in name and not name.startswith("/"), name
        assert ".pyc" not in name, name
        assert not {"__MACOSX", ".git", "__pycache__"} & set(name.split("/")), name
    assert {name.split("/")[0] for name in names} == {"fers"}
    assert re.fullmatch(r"[a-z_][a-z0-9_]*", "fers")  # a new plugin's folder must be PEP 8
    for required in ("fers/__init__.py", "fers/metadata.txt", "fers/LICENSE"):
        assert required in names, required


def test_zip_metadata_passes_the_plugin_repository_checks(package):
    path, names = package
    parser, text = zip_metadata(path)
    general = parser["general"]
    for key in REPOSITORY_REQUIRED:
        assert general.get(key, "").strip(), f"metadata.txt needs {key}"
    assert re.fullmatch(r"[^@\s]+@[^@\s]+\.[A-Za-z]{2,}", general["email"])
    assert "/" not in general["author"]
    assert re.fullmatch(r"\d+\.\d+(\.\d+)?", general["version"])
    minimum, maximum = (tuple(int(p) for p in general[k].split(".")) for k in ("qgisMinimumVersion",
                                                                             "qgisMaximumVersion"))
    assert (3, 22) <= minimum <= maximum
    for key in ("homepage", "tracker", "repository"):
        address = urllib.parse.urlparse(general[key])
        assert address.scheme == "https" and address.netloc, f"{key}={general[key]}"
        assert general[key] not in ("http://bugs", "http://repo", "http://homepage")
    for key in ("experimental", "deprecated"):
        assert general[key].lower() in ("true", "false"), key
    assert f"fers/{general['icon']}" in names
    # QGIS reads metadata.txt with interpolation: a '%' would make the value unreadable in the Plugin Manager
    qgis_reader = configparser.ConfigParser()
    qgis_reader.read_string(text)
    assert all(qgis_reader.get("general", key) is not None for key in qgis_reader["general"])


def test_metadata_is_informative_for_the_plugin_manager(package):
    general = zip_metadata(package[0])[0]["general"]
    assert "\n" not in general["description"] and len(general["description"]) <= 200
    assert len(general["about"]) >= 300
    changelog = general["changelog"].splitlines()
    assert changelog[0].startswith(general["version"]) and len(changelog) >= 4, general["changelog"]
    assert "See CHANGELOG" not in general["changelog"]
    tags = {tag.strip().lower() for tag in general["tags"].split(",")}
    assert not tags & UNINFORMATIVE_TAGS, tags & UNINFORMATIVE_TAGS
    assert {"hyperspectral", "anomaly detection"} <= tags
    screenshot = general.get("screenshot")
    if screenshot:  # shipped, a real PNG, and small
        with zipfile.ZipFile(package[0]) as archive:
            data = archive.read(f"fers/{screenshot}")
        assert data.startswith(b"\x89PNG") and len(data) < 400_000


def test_package_warns_while_addresses_are_placeholders(package_build):
    script = package_module()
    placeholders = script.placeholder_addresses(script.read_metadata())
    if placeholders:
        assert "WARNING: placeholder addresses in metadata.txt" in package_build.stderr
        assert all(key in package_build.stderr for key in placeholders)
    else:
        assert "placeholder" not in package_build.stderr
    real = {"homepage": "https://example.org/fers", "tracker": "https://example.org/fers/issues",
            "repository": "https://example.org/fers.git"}
    assert script.placeholder_addresses(real) == []
    assert script.placeholder_addresses({**real, "tracker": "http://bugs"}) == ["tracker"]
    assert script.placeholder_addresses({**real, "homepage": ""}) == ["homepage"]


def test_readme_screenshots_exist_and_stay_small():
    """Every picture the README shows is in the checkout, a PNG, and all of them together stay small;
    metadata.txt's screenshot is one of them."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    images = re.findall(r"!\[[^\]]*\]\(([^)\s]+\.png)\)", readme)
    assert len(images) >= 4
    for image in images:
        assert (ROOT / image).is_file(), image
        assert (ROOT / image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", image
    assert sum((ROOT / image).stat().st_size for image in set(images)) < 600_000
    metadata = configparser.ConfigParser()
    metadata.read(ROOT / "metadata.txt", encoding="utf-8")
    assert metadata["general"]["screenshot"] in images


def test_zip_takes_nothing_from_outside_the_checkout():
    """No runtime file is a link to ../shared (or anywhere else outside the checkout)."""
    root = ROOT.resolve()
    for name in package_module().runtime_files():
        resolved = (ROOT / name).resolve()
        assert resolved.is_relative_to(root), name
        assert not resolved.is_relative_to(SHARED.resolve()), name


def qgis_environment(tmp_path, plugins):
    environment = dict(os.environ)
    environment.update(QT_QPA_PLATFORM="offscreen", XDG_RUNTIME_DIR=str(ROOT / ".run" / "xdg"),
                       QGIS_CUSTOM_CONFIG_PATH=str(tmp_path / "profile"), QGIS_PLUGINPATH=str(plugins))
    environment["PATH"] = f"{ROOT / '.venv' / 'bin'}{os.pathsep}{environment.get('PATH', '')}"
    return environment


@pytest.mark.slow
def test_packaged_plugin_loads_and_runs_in_qgis(package, tmp_path):
    """The zip on its own (as 'Install from ZIP' unpacks it) registers every algorithm and runs fers:rx."""
    if not os.path.exists("/usr/bin/qgis_process.bin"):
        pytest.skip("/usr/bin/qgis_process.bin is absent (Debian's qgis package)")
    plugins = tmp_path / "plugins"
    with zipfile.ZipFile(package[0]) as archive:
        archive.extractall(plugins)
    environment = qgis_environment(tmp_path, plugins)

    def qgis_process(*arguments):
        return subprocess.run(["/usr/bin/qgis_process.bin", *arguments], capture_output=True, text=True,
                              timeout=120, env=environment, cwd=tmp_path)

    assert qgis_process("plugins", "enable", "fers").returncode == 0
    listed = qgis_process("list").stdout.split()
    for algorithm in ("fers:rx", "fers:detect", "fers:import_checkpoint", "fers:evaluate",
                      "fers:detect_mask_polygons_report"):
        assert algorithm in listed
    source = write_cube(tmp_path / "cube.tif", np.random.default_rng(0).normal(50, 5, (4, 12, 15)).astype("f4"))
    completed = qgis_process("run", "fers:rx", "--", f"INPUT={source}", f"OUTPUT={tmp_path / 'rx.tif'}")
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert read(tmp_path / "rx.tif")[0].shape == (12, 15)


def snapshot(folder):
    return {path.relative_to(folder).as_posix(): (path.stat().st_size, path.stat().st_mtime_ns)
            for path in folder.rglob("*")}


@pytest.fixture
def inputs(tmp_path):
    """A folder with a scene, a mask and a model (copies, so nothing shared is touched)."""
    from fers.fers_core.enhance.model_file import random_init_model, save_model

    folder = tmp_path / "inputs"
    folder.mkdir()
    rng = np.random.default_rng(5)
    cube = rng.normal(100, 10, (6, 30, 34)).astype(np.int16)
    cube[:, 0, :3] = -1
    write_cube(folder / "scene.tif", cube, nodata=-1)
    mask = np.zeros((30, 34), np.uint8)
    mask[10:12, 10:12] = 1
    write_cube(folder / "mask.tif", mask)
    save_model(random_init_model(8, seed=0), folder / "model.pt")
    return folder


@pytest.mark.slow
def test_algorithms_write_only_their_outputs(run_alg, tmp_path, inputs):
    """Nothing beside the inputs (no .aux.xml), only the asked-for files in the output folder, and no
    leftover temporary mask in QGIS's temporary folder."""
    from qgis.core import QgsProcessingUtils

    before = snapshot(inputs)
    out = tmp_path / "out"
    scene, mask = str(inputs / "scene.tif"), str(inputs / "mask.tif")
    run_alg("fers:rx", {"INPUT": scene, "MASK": mask, "BANDS": [1, 2, 4], "OUTPUT": str(out / "rx.tif"),
                        "OUTPUT_MASK": str(out / "rx_mask.tif"), "OUTPUT_POLYGONS": str(out / "rx.gpkg")})
    run_alg("fers:rx", {"INPUT": scene, "MODE": 1, "WINDOW_INNER": 3, "WINDOW_OUTER": 9,
                        "OUTPUT": str(out / "local.tif"), "OUTPUT_POLYGONS": str(out / "local.gpkg")})
    run_alg("fers:detect", {"INPUT": scene, "MASK": mask, "MODEL": str(inputs / "model.pt"),
                            "OUTPUT": str(out / "fers.tif"), "OUTPUT_SPECTRAL": str(out / "spe.tif"),
                            "OUTPUT_SPATIAL": str(out / "spa.tif")})
    run_alg("fers:detect", {"INPUT": scene, "MODEL": str(inputs / "model.pt"), "FUSION": 2, "MEMORY_MB": 1,
                            "OUTPUT": str(out / "product.tif")})
    gc.collect()  # layers QGIS loaded are released (and would write their .aux.xml) now
    assert snapshot(inputs) == before
    assert sorted(p.name for p in out.iterdir()) == sorted([
        "rx.tif", "rx_mask.tif", "rx.gpkg", "local.tif", "local.gpkg", "fers.tif", "spe.tif", "spa.tif",
        "product.tif"])
    temporary = QgsProcessingUtils.tempFolder()
    assert not [name for name in os.listdir(temporary) if name.startswith("fers_")]


@pytest.mark.slow
def test_qgis_process_writes_nothing_in_its_working_folder(tmp_path, inputs):
    before = snapshot(inputs)
    work = tmp_path / "work"
    work.mkdir()
    output = tmp_path / "out" / "rx.tif"
    for algorithm, extra in (("fers:rx", []), ("fers:detect", [f"MODEL={inputs / 'model.pt'}", "BRANCHES=1"])):
        completed = subprocess.run(
            [str(ROOT / "scripts" / "qgis_process"), "run", algorithm, "--", f"INPUT={inputs / 'scene.tif'}",
             f"MASK={inputs / 'mask.tif'}", *extra, f"OUTPUT={output}"],
            capture_output=True, text=True, timeout=180, cwd=work,
        )
        assert completed.returncode == 0, completed.stdout + completed.stderr
        assert list(work.iterdir()) == []
        assert snapshot(inputs) == before
        assert sorted(p.name for p in output.parent.iterdir()) == ["rx.tif"]
        shutil.rmtree(output.parent)
