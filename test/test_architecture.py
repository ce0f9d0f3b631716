"""The engine's structure rules: small modules, torch only in enhance/ and training/, no QGIS.

Each rule reads the source with `ast`, so an import inside a function counts as much as one at the
top of a module; the torch-free rules also run the engine in a process where torch cannot load.
"""

import ast
import importlib
import json
import subprocess
import sys

import pytest

from .conftest import ROOT

ENGINE = ROOT / "fers_core"
MAX_LINES = 400
TORCH_PACKAGES = ("enhance", "training")  # the only sub-packages that may import torch
QGIS_MODULES = ("qgis", "processing", "PyQt5", "PyQt6", "sip")
TORCH_FREE = ("io", "detectors", "distributed", "runtime", "errors", "feedback", "synthetic", "__main__")


def engine_files():
    return sorted(path for path in ENGINE.rglob("*.py") if "__pycache__" not in path.parts)


def relative(path):
    return path.relative_to(ROOT).as_posix()


def imported_modules(path):
    """(line, absolute module name or None, relative level) of every import in a file, however deep."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, 0
        elif isinstance(node, ast.ImportFrom):
            yield node.lineno, node.module, node.level
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            function = getattr(node.func, "attr", None) or getattr(node.func, "id", None)
            if function in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                yield node.lineno, node.args[0].value, 0


def imports_of(path, roots):
    """'file:line module' for each absolute import in `path` of a module under one of `roots`."""
    return [f"{relative(path)}:{line} {module}" for line, module, level in imported_modules(path)
            if level == 0 and module and module.split(".")[0] in roots]


def test_engine_files_are_found():
    names = {relative(path) for path in engine_files()}
    assert {"fers_core/detectors/rx.py", "fers_core/io/reader.py", "fers_core/enhance/model_file.py"} <= names


def test_no_engine_module_is_over_400_lines():
    long = {relative(path): lines for path in engine_files()
            if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"split these modules to at most {MAX_LINES} lines: {long}"


def test_only_enhance_and_training_import_torch():
    found = [hit for path in engine_files() if path.relative_to(ENGINE).parts[0] not in TORCH_PACKAGES
             for hit in imports_of(path, {"torch"})]
    assert not found, "torch is imported outside fers_core/enhance and fers_core/training (reach the networks " \
                      f"through functions of enhance/ instead): {found}"


def test_the_engine_never_imports_qgis():
    found = [hit for path in engine_files() for hit in imports_of(path, set(QGIS_MODULES))]
    assert not found, f"fers_core must run without QGIS: {found}"


def test_the_engine_imports_nothing_of_the_plugin_around_it():
    """No absolute `fers.` import and no relative import that climbs out of fers_core (e.g. into algorithms/)."""
    found = []
    for path in engine_files():
        depth = len(path.relative_to(ROOT).parts) - 1  # packages above the file, fers_core included
        found += [f"{relative(path)}:{line} {'.' * level}{module or ''}"
                  for line, module, level in imported_modules(path)
                  if (level == 0 and module and module.split(".")[0] == "fers") or level > depth]
    assert not found, f"fers_core must import only itself and libraries: {found}"


def test_tests_import_the_engine_by_one_name_only():
    """`fers.fers_core...` everywhere, so one test run holds one copy of the engine's module state."""
    found = [hit for path in sorted((ROOT / "test").rglob("*.py")) for hit in imports_of(path, {"fers_core"})]
    assert not found, f"import the engine as fers.fers_core in tests: {found}"


def test_the_bare_engine_name_is_refused_in_the_test_process():
    bare = "fers_core.errors"  # a variable, so the static rule above does not count this deliberate import
    with pytest.raises(ImportError, match="fers.fers_core"):
        importlib.import_module(bare)
    assert not [name for name in sys.modules if name.split(".")[0] == "fers_core"]


TORCH_BLOCKED = """
import sys
sys.modules["torch"] = None  # `import torch` now raises ImportError
sys.path[:0] = [{plugins!r}]
import importlib, json, os, tempfile
for name in {modules!r}:
    importlib.import_module(name)
from fers.fers_core.detectors.global_rx import run_global_rx
from fers.fers_core.detectors.local_rx import run_local_rx
from fers.fers_core.distributed.batch import run_batch
from fers.fers_core.synthetic import write_scene
folder = tempfile.mkdtemp(dir={folder!r})
scene, _ = write_scene(os.path.join(folder, "scene.tif"), os.path.join(folder, "truth.tif"), rows=24, cols=30, bands=10)
print(json.dumps({{
    "global": run_global_rx(scene, os.path.join(folder, "global.tif")).valid_pixels,
    "local": run_local_rx(scene, os.path.join(folder, "local.tif"), inner=3, outer=9).scored_pixels,
    "batch": [record.status for record in run_batch([scene], os.path.join(folder, "batch"), detector="rx")],
    "torch": sorted(name for name in sys.modules if name.startswith("torch") and sys.modules[name] is not None),
}}))
"""


def torch_free_modules():
    """Every module of the packages that must load without torch (fers:rx runs where torch is absent)."""
    names = []
    for name in TORCH_FREE:
        package = ENGINE / name
        paths = sorted(package.rglob("*.py")) if package.is_dir() else [ENGINE / f"{name}.py"]
        names += [".".join(("fers",) + path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                  for path in paths if "__pycache__" not in path.parts]
    return names


def test_classical_detectors_load_and_run_without_torch(tmp_path):
    modules = torch_free_modules()
    assert "fers.fers_core.detectors.global_rx" in modules and "fers.fers_core.distributed" in modules
    script = TORCH_BLOCKED.format(plugins=str(ROOT / ".plugins"), modules=modules, folder=str(tmp_path))
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                               cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.splitlines()[-1])
    assert result["global"] > 0 and result["local"] == result["global"], result
    assert result["batch"] == ["ok"] and result["torch"] == [], result


LAYERS = {  # what each sub-package may import of the engine (besides errors, feedback and choices)
    "io": set(),
    "runtime": {"io"},
    "detectors": {"io", "runtime"},
    "enhance": {"io", "runtime"},
    "pipeline": {"io", "runtime", "detectors", "enhance"},
    "training": {"io", "runtime", "enhance", "pipeline"},
    "distributed": {"io", "runtime", "detectors", "enhance", "pipeline"},
}
BASE = {"errors", "feedback", "choices"}


def engine_target(path, module, level):
    """The engine's top-level package or module an import in `path` reaches, or None for a library."""
    parts = path.relative_to(ENGINE).parts
    if level == 0:
        names = (module or "").split(".")
        return names[1] if names[0] == "fers_core" and len(names) > 1 else None
    base = list(parts[:-1])[: len(parts) - level]
    names = base + ((module or "").split(".") if module else [])
    return names[0] if names else None


def test_sub_packages_import_only_the_layers_below_them():
    """io <- runtime <- detectors, enhance <- pipeline <- training, distributed: a folder says what a module may use."""
    assert set(LAYERS) == {path.name for path in ENGINE.iterdir() if (path / "__init__.py").exists()}
    found = []
    for path in engine_files():
        package = path.relative_to(ENGINE).parts[0]
        if package not in LAYERS:
            continue
        for line, module, level in imported_modules(path):
            target = engine_target(path, module, level)
            if target and target != package and target not in BASE and target not in LAYERS[package]:
                found.append(f"{relative(path)}:{line} imports {target}")
    assert not found, f"imports against the layering: {found}"
