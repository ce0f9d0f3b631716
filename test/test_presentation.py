"""What the Toolbox, the dialogs and `qgis_process help` show: help, Advanced sections, icons, names, enums."""

import enum
import html
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from qgis.core import (
    QgsApplication,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterNumber,
)

from .conftest import ROOT, Recorder
from .rasters import read

ADVANCED = {  # parameters the dialog shows under Advanced; everything else is in the main section
    "fers:detect": {"BRANCHES", "FUSION", "DEVICE", "DETECTOR", "WINDOW_INNER", "WINDOW_OUTER", "PRECISION",
                    "MEMORY_MB", "TILE_SIZE", "TILE_MARGIN", "SCHEDULER", "MODELS", "ENSEMBLE_FUSION", "FUSE_RX",
                    "INPUT_NODATA"},
    "fers:train": {"INPUT_NODATA", "STAGES", "MODEL_BANDS", "WAVELENGTHS", "EPOCHS", "PATCH_SIZE", "BATCH_SIZE",
                   "LEARNING_RATE", "SEED", "TEACHER", "DEVICE"},
    "fers:rx": {"WINDOW_INNER", "WINDOW_OUTER", "COMPONENTS", "MEMORY_MB", "SCHEDULER", "INPUT_NODATA"},
    "fers:evaluate": set(),
    "fers:import_checkpoint": set(),
}
MAIN_DETECT = {"INPUT", "BANDS", "MODEL", "MASK", "THRESHOLD_METHOD", "THRESHOLD", "MIN_PIXELS", "OUTPUT",
               "OUTPUT_SPECTRAL", "OUTPUT_SPATIAL", "OUTPUT_MASK", "OUTPUT_POLYGONS"}


def fers_algorithms():
    """The provider's Python algorithms (the example model is a model, with its own help)."""
    from fers.algorithms.base import FersAlgorithm

    return [a for a in QgsApplication.processingRegistry().providerById("fers").algorithms()
            if isinstance(a, FersAlgorithm)]


def advanced_names(algorithm):
    return {p.name() for p in algorithm.parameterDefinitions()
            if p.flags() & QgsProcessingParameterDefinition.Flag.FlagAdvanced}


def rendered(help_html):
    """The text the dialog's help panel shows: it reads HTML, one paragraph per line of the help."""
    from qgis.PyQt.QtGui import QTextDocument

    document = QTextDocument()
    document.setHtml("".join(f"<p>{line}</p>" for line in help_html.split("\n")))
    return document.toPlainText()


def github_anchor(heading):
    """GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def test_every_algorithm_has_the_expected_advanced_parameters(qgis_app):
    algorithms = {a.id(): a for a in fers_algorithms()}
    assert set(algorithms) == set(ADVANCED)
    for algorithm_id, expected in ADVANCED.items():
        assert advanced_names(algorithms[algorithm_id]) == expected, algorithm_id
    detect = algorithms["fers:detect"]
    assert {p.name() for p in detect.parameterDefinitions()} - advanced_names(detect) == MAIN_DETECT


@pytest.mark.parametrize("algorithm_id", ["fers:detect", "fers:train", "fers:rx"])
def test_real_dialog_shows_advanced_parameters_apart_and_every_help(qgis_app, algorithm_id):
    from processing.gui.AlgorithmDialog import AlgorithmDialog
    from qgis.PyQt.QtWidgets import QTextBrowser, QWidget

    algorithm = QgsApplication.processingRegistry().createAlgorithmById(algorithm_id)
    dialog = AlgorithmDialog(algorithm)
    try:
        advanced_box = dialog.findChild(QWidget, "grpAdvanced")
        in_advanced = set()
        for name, wrapper in dialog.mainWidget().wrappers.items():
            widget = wrapper.wrappedWidget()
            assert html.unescape(algorithm.parameterDefinition(name).help()) in rendered(widget.toolTip()), name
            while widget is not None and widget is not advanced_box:
                widget = widget.parentWidget()
            if widget is advanced_box:
                in_advanced.add(name)
        assert in_advanced == ADVANCED[algorithm_id]
        shown = dialog.findChild(QTextBrowser, "textShortHelp").toPlainText()
        for parameter in algorithm.parameterDefinitions():
            assert f"{parameter.description()}: {html.unescape(parameter.help())}" in shown, parameter.name()
    finally:
        dialog.deleteLater()


def test_every_parameter_has_help_and_the_help_panel_lists_it_by_its_label(qgis_app):
    for algorithm in fers_algorithms():
        keys = [p.name() for p in algorithm.parameterDefinitions()]
        shown = rendered(algorithm.shortHelpString())
        for parameter in algorithm.parameterDefinitions():
            assert len(parameter.help()) > 20, (algorithm.id(), parameter.name())
            assert parameter.clone().help() == parameter.help()  # the batch dialog and the modeler clone
            assert "(optional)" not in parameter.description().lower(), (algorithm.id(), parameter.name())
            assert f"{parameter.description()}: {html.unescape(parameter.help())}" in shown, parameter.name()
        for key in keys:  # the dialog's labels, not command-line keys
            assert not re.search(rf"\b{key}\b", shown), (algorithm.id(), key)


def test_help_text_is_html_escaped_so_the_help_panel_keeps_it(qgis_app):
    from qgis.core import QgsProcessingParameterString

    from fers.algorithms.base import FersAlgorithm

    class Probe(FersAlgorithm):
        help_intro = "Writes <output>.resume.pt & more."

        def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API)
            self.add_parameter(QgsProcessingParameterString("NAME", "Name"), "A <name> as in <output> & co.")

    probe = Probe()
    probe.initAlgorithm()
    shown = rendered(probe.shortHelpString())
    assert "Writes <output>.resume.pt & more." in shown and "Name: A <name> as in <output> & co." in shown
    assert rendered(probe.parameterDefinition("NAME").help()) == "A <name> as in <output> & co."


@pytest.mark.slow
def test_qgis_process_help_explains_every_parameter():
    completed = subprocess.run([str(ROOT / "scripts" / "qgis_process"), "help", "fers:detect"], capture_output=True,
                               text=True, timeout=180)
    assert completed.returncode == 0, completed.stderr
    from fers.algorithms import outputs

    text = completed.stdout
    arguments = text.split("Arguments\n----------------", 1)[1]
    for key in ADVANCED["fers:detect"] | MAIN_DETECT:
        block = re.search(rf"^{key}: (.+)\n\t(.+)\n\tArgument type", arguments, re.M)
        assert block and len(block.group(2)) > 20, key  # the label, then that parameter's help
    assert outputs.HELP in text  # the threshold, mask and objects paragraph


@pytest.mark.slow
@pytest.mark.parametrize("algorithm_id", sorted(ADVANCED))
def test_qgis_process_help_reads_as_plain_text(algorithm_id):
    """qgis_process prints the HTML-escaped help as it is: the help avoids <, > and & so it stays readable."""
    completed = subprocess.run([str(ROOT / "scripts" / "qgis_process"), "help", algorithm_id], capture_output=True,
                               text=True, timeout=180)
    assert completed.returncode == 0, completed.stderr
    assert not re.search(r"&(lt|gt|amp|quot|#\d+);", completed.stdout), completed.stdout


def test_help_urls_open_the_shipped_readme_until_the_repository_is_published(qgis_app, monkeypatch):
    """The repository in metadata.txt does not answer yet: a Help button leading there opened a missing page. Once
    metadata.txt names a published address, each algorithm's Help opens its own README section there."""
    from urllib.parse import unquote, urlparse

    from fers.algorithms import help_links

    assert help_links.plugin_address().startswith(help_links.UNPUBLISHED_ADDRESSES)
    for algorithm in fers_algorithms():
        url = urlparse(algorithm.helpUrl())
        assert url.scheme == "file" and Path(unquote(url.path)).resolve() == (ROOT / "README.md").resolve()
    example = QgsApplication.processingRegistry().algorithmById("fers:detect_mask_polygons_report")
    assert urlparse(example.helpUrl()).scheme == "file"
    monkeypatch.setattr(help_links, "plugin_address", lambda: "https://example.org/fers")
    assert example.helpUrl() == "https://example.org/fers#example-model"
    headings = re.findall(r"^#{2,4} (.+)$", (ROOT / "README.md").read_text(), re.M)
    for algorithm in fers_algorithms():
        address, anchor = algorithm.helpUrl().split("#")
        assert address == "https://example.org/fers"
        matching = [h for h in headings if f"`{algorithm.id()}`" in h]
        assert matching and anchor == github_anchor(matching[0]), algorithm.id()


def test_every_number_parameter_with_a_default_names_it_in_its_help(qgis_app):
    """qgis_process 3.22 prints no defaults: the help is where a command-line user finds them."""
    from qgis.core import QgsProcessingParameterNumber

    for algorithm in fers_algorithms():
        for parameter in algorithm.parameterDefinitions():
            if isinstance(parameter, QgsProcessingParameterNumber) and parameter.defaultValue() is not None:
                assert "default" in parameter.help().lower(), (algorithm.id(), parameter.name())


def test_each_algorithm_has_its_own_icon_search_tags_and_summary(qgis_app):
    from qgis.PyQt.QtSvg import QSvgRenderer

    contents = {(ROOT / "icons" / "fers.svg").read_bytes()}
    for algorithm in fers_algorithms():
        path = Path(algorithm.svgIconPath()).resolve()
        assert path.parent == ROOT / "icons" and QSvgRenderer(str(path)).isValid(), path
        assert not algorithm.icon().isNull()
        contents.add(path.read_bytes())
        tags = algorithm.tags()
        assert len(tags) >= 5 and "hyperspectral" in tags and "anomaly" in tags, algorithm.id()
        assert 30 < len(algorithm.shortDescription()) <= 120, algorithm.id()  # the Toolbox tooltip's sentence
    example = QgsApplication.processingRegistry().algorithmById("fers:detect_mask_polygons_report")
    assert 30 < len(example.shortDescription()) <= 120  # its Toolbox tooltip was blank
    assert len(contents) == len(fers_algorithms()) + 1  # distinct from each other and from the plugin's icon


def test_provider_name_fits_the_toolbox_and_groups_do_not_clash(qgis_app):
    provider = QgsApplication.processingRegistry().providerById("fers")
    assert provider.name() == "FERS" and "anomaly detection" in provider.longName()
    groups = {a.group() for a in provider.algorithms()}
    assert "Models" not in groups and {"Anomaly detection", "Model training"} <= groups


def test_labels_name_layers_plainly(qgis_app):
    for algorithm in fers_algorithms():
        for definition in list(algorithm.parameterDefinitions()) + list(algorithm.outputDefinitions()):
            assert not re.search(r"\((optional|polygons|GeoPackage)", definition.description(), re.I), \
                (algorithm.id(), definition.description())


def enum_member(value):
    """Whether `value` is a member of an enum (sip enums are int subclasses, PyQt6 enums enum.Enum)."""
    return isinstance(value, enum.Enum) or (isinstance(value, int) and type(value) not in (int, bool))


def unscoped_enum_uses(text, where):
    """`Class.Member` uses in `text` where Member is an enum member of the QGIS or Qt class Class.

    Qt6 (QGIS 4) drops the unscoped aliases; the scoped form `Class.Enum.Member` works on QGIS 3.22 too.
    Classes and members are looked up in the running PyQGIS, so the check knows every enum.
    """
    import qgis.core
    import qgis.gui
    from qgis.PyQt import QtCore, QtGui, QtWidgets

    modules = (qgis.core, qgis.gui, QtCore, QtGui, QtWidgets)
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for match in re.finditer(r"\b(Q[A-Za-z0-9_]*)\.([A-Za-z_]\w*)", line):
            owner = next((getattr(m, match.group(1)) for m in modules if hasattr(m, match.group(1))), None)
            if owner is not None and enum_member(getattr(owner, match.group(2), None)):
                found.append(f"{where}:{number}: {match.group(0)}")
    return found


def plugin_python_files():
    """Every Python file of the checkout but the tests (and hidden, build and output folders)."""
    skipped = {"test", "dist", "demo", "__pycache__"}
    return sorted(path for path in ROOT.rglob("*.py") if not any(
        part.startswith(".") or part in skipped for part in path.relative_to(ROOT).parts[:-1]))


def test_the_enum_check_finds_unscoped_uses(qgis_app):
    text = ("a = QgsProcessingParameterNumber.Integer\nb = QgsProcessing.TypeRaster | Qt.AlignLeft\n"
            "c = QgsProcessingParameterNumber.Type.Integer, QgsProcessing.TEMPORARY_OUTPUT\n"
            "c = Qt.AlignmentFlag.AlignLeft\n"
            "d = QgsProcessingParameterDefinition.FlagAdvanced, QgsColorRampShader.Interpolated\n")
    assert unscoped_enum_uses(text, "x") == [
        "x:1: QgsProcessingParameterNumber.Integer", "x:2: QgsProcessing.TypeRaster", "x:2: Qt.AlignLeft",
        "x:5: QgsProcessingParameterDefinition.FlagAdvanced", "x:5: QgsColorRampShader.Interpolated"]
    assert QgsProcessingParameterNumber.Type.Integer == QgsProcessingParameterNumber.Integer  # same value on 3.22


def test_plugin_sources_use_scoped_enums_only(qgis_app):
    files = plugin_python_files()
    assert {"plugin.py", "algorithms/base.py", "scripts/make_example_model.py"} <= {
        str(path.relative_to(ROOT)) for path in files}
    found = [use for path in files for use in unscoped_enum_uses(path.read_text(), path.relative_to(ROOT))]
    assert not found, "unscoped enums (QGIS 4 / Qt6 removes them):\n" + "\n".join(found)


@pytest.mark.slow
def test_detect_log_names_the_fusion_as_chosen_and_no_developer_path(run_alg, tmp_path):
    pytest.importorskip("torch")
    from fers.fers_core.synthetic import write_scene

    source, _ = write_scene(tmp_path / "scene.tif", tmp_path / "truth.tif", rows=40, cols=48, bands=24, seed=1)
    log = Recorder()
    run_alg("fers:detect", {"INPUT": source, "OUTPUT": str(tmp_path / "scores.tif")}, feedback=log)
    text = "\n".join(log.infos)
    assert "fusion: As the reference (product at 50 model bands)" in text
    assert not re.search(r"\b(scripts|fers_core|test)/", text), text


@pytest.mark.slow
def test_default_threshold_gives_a_short_list_of_true_objects_on_the_demo_scene(run_alg, tmp_path):
    """The demo scene (make demo) has 12 anomalies, 55 pixels; the former defaults gave 110 RX objects."""
    from fers.fers_core.synthetic import write_scene

    source, truth = write_scene(tmp_path / "demo.tif", tmp_path / "truth.tif")
    result = run_alg("fers:rx", {"INPUT": source, "OUTPUT": str(tmp_path / "rx.tif"),
                                 "OUTPUT_MASK": str(tmp_path / "mask.tif"),
                                 "OUTPUT_POLYGONS": str(tmp_path / "objects.gpkg")})
    from scipy import ndimage

    mask, anomalies = read(result["OUTPUT_MASK"])[0] == 1, read(truth)[0] > 0
    labels, _ = ndimage.label(mask, np.ones((3, 3), bool))
    sizes = np.bincount(labels.ravel())
    kept = [i for i in range(1, len(sizes)) if sizes[i] >= 2]
    assert result["OBJECT_COUNT"] == len(kept) and 3 <= len(kept) <= 12
    assert all(anomalies[labels == i].any() for i in kept)  # every object listed is a true anomaly
