"""Test setup: headless QGIS with this checkout's plugin, shared fixtures and helpers.

The plugin is imported as package `fers` (through .plugins/fers -> checkout), exactly as QGIS
loads it, and tests import the engine only as `fers.fers_core`: the bare name `fers_core` is
refused in the test process, so one run never holds two copies of the engine's module state
(subprocesses such as `python -m fers_core` are unaffected). `make test-fast` leaves out the tests
marked `slow` and every test on a Dask cluster fixture.
"""

import os
import subprocess
import sys
from importlib.abc import MetaPathFinder
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SCENES = SHARED / "data" / "scenes"
REFERENCE = SHARED / "reference"

_runtime = ROOT / ".run" / "xdg"
_runtime.mkdir(parents=True, exist_ok=True)
_runtime.chmod(0o700)
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("XDG_RUNTIME_DIR", str(_runtime))
os.environ.setdefault("QGIS_CUSTOM_CONFIG_PATH", str(ROOT / ".qgis-profile"))
_plugins = ROOT / ".plugins"
_plugins.mkdir(exist_ok=True)
if not (_plugins / "fers").exists():
    (_plugins / "fers").symlink_to(ROOT)
for path in (str(_plugins), str(ROOT), "/usr/share/qgis/python/plugins"):
    if path not in sys.path:
        sys.path.insert(0, path)


class _BareEngineName(MetaPathFinder):
    """Refuses `import fers_core...`: the engine is `fers.fers_core` in tests (one copy of its state)."""

    def find_spec(self, name, path=None, target=None):
        if name == "fers_core" or name.startswith("fers_core."):
            raise ImportError(f"import the engine as fers.{name} in tests, not as {name} "
                              "(that would load a second copy of its modules)")
        return None


sys.meta_path.insert(0, _BareEngineName())


from qgis.core import QgsProcessingFeedback  # noqa: E402 (after the environment above is set)


class CancelAt(QgsProcessingFeedback):
    """Cancels as soon as progress reaches the given percent."""

    def __init__(self, percent):
        super().__init__()
        self.percent = percent
        self.seen = []
        self.progressChanged.connect(self._on_progress)

    def _on_progress(self, value):
        self.seen.append(value)
        if value >= self.percent:
            self.cancel()


class Recorder(QgsProcessingFeedback):
    """Keeps the warnings and the log lines a run pushes."""

    def __init__(self):
        super().__init__()
        self.warnings, self.infos = [], []

    def pushWarning(self, text):  # noqa: N802 (QGIS API)
        self.warnings.append(text)

    def pushInfo(self, text):  # noqa: N802 (QGIS API)
        self.infos.append(text)


def require_scenes():
    """Skip the calling test when the shared real scenes are absent."""
    if not SCENES.is_dir():
        pytest.skip(f"real scenes not available: {SCENES} is absent (it exists only beside the development checkout)")
    return SCENES


def require_reference():
    """Skip the calling test when the FERS authors' reference material is absent."""
    if not REFERENCE.is_dir():
        pytest.skip(f"FERS reference checkpoints not available: {REFERENCE} is absent")
    return REFERENCE


CLUSTER_FIXTURES = {"client", "scheduler"}  # the Dask cluster fixtures of the tests


def pytest_collection_modifyitems(items):
    """A test on a Dask cluster is slow, marked or not: its cluster starts worker processes."""
    for item in items:
        if CLUSTER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def qgis_app():
    """An offscreen QgsApplication with Processing and the fers provider registered.

    GUI-enabled (QT_QPA_PLATFORM=offscreen, no display needed), so the desktop tests can build
    QGIS's real Processing dialogs; processing.run works the same as in a non-GUI application.
    """
    from qgis.core import QgsApplication

    app = QgsApplication([], True)
    app.initQgis()
    from processing.core.Processing import Processing

    Processing.initialize()
    import fers

    plugin = fers.classFactory(None)  # as QGIS does, with no interface (like qgis_process)
    plugin.initProcessing()
    app.fers_plugin = plugin  # keep a Python reference to the plugin and its provider
    yield app
    plugin.unload()


@pytest.fixture
def run_alg(qgis_app):
    """processing.run(alg, params, feedback=...) in process, returning the results dict."""
    import processing
    from qgis.core import QgsProcessingContext, QgsProcessingFeedback

    def run(algorithm_id, parameters, feedback=None):
        context = QgsProcessingContext()
        return processing.run(algorithm_id, parameters, context=context, feedback=feedback or QgsProcessingFeedback())

    return run


def read_only_folder(parent, name="readonly"):
    """(parent/name, release): a folder nobody can write to (as root a read-only tmpfs), or skip."""
    folder = parent / name
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return folder, lambda: folder.chmod(0o755)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs: {mounted.stderr.decode().strip()}")
    return folder, lambda: subprocess.run(["umount", str(folder)], check=True)


TEST_MODEL_BANDS = 16


@pytest.fixture(scope="session")
def model_file(tmp_path_factory):
    """A random-init two-branch model file for 16 bands, outside every test's own folder (shared by test files)."""
    from fers.fers_core.enhance.model_file import random_init_model, save_model

    path = tmp_path_factory.mktemp("model") / "random16.pt"
    save_model(random_init_model(TEST_MODEL_BANDS, seed=0), path)
    return str(path)
