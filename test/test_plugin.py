"""The plugin loads as QGIS loads it and registers its algorithms."""

import configparser
import subprocess

import pytest
from qgis.core import QgsApplication

from .conftest import ROOT

EXPECTED_ALGORITHMS = {"fers:rx", "fers:detect", "fers:import_checkpoint", "fers:evaluate", "fers:train"}


def test_metadata_is_complete():
    metadata = configparser.ConfigParser()
    metadata.read(ROOT / "metadata.txt")
    general = metadata["general"]
    for key in ("name", "description", "about", "version", "author", "email", "homepage", "tracker",
                "repository", "category", "tags", "icon", "experimental"):
        assert general.get(key), key
    assert general["qgisMinimumVersion"] == "3.22"
    assert general["hasProcessingProvider"] == "yes"
    assert general["supportsQt6"] == "True"
    assert (ROOT / general["icon"]).exists()


def test_plugin_registers_provider_and_unload_removes_it(qgis_app):
    registry = QgsApplication.processingRegistry()
    plugin = qgis_app.fers_plugin
    assert registry.providerById("fers") is not None
    assert EXPECTED_ALGORITHMS <= {a.id() for a in registry.providerById("fers").algorithms()}
    plugin.unload()
    assert registry.providerById("fers") is None
    plugin.initProcessing()
    assert registry.algorithmById("fers:rx") is not None


@pytest.mark.slow
def test_qgis_process_lists_the_algorithms():
    completed = subprocess.run([str(ROOT / "scripts" / "qgis_process"), "list"], capture_output=True, text=True,
                               timeout=120)
    assert completed.returncode == 0, completed.stderr
    for algorithm_id in EXPECTED_ALGORITHMS:
        assert algorithm_id in completed.stdout
