"""Runs inside QGIS desktop (`qgis --code`), started by scripts/screenshots.py: drives the real GUI as a
user would and saves raw PNGs of the Processing Toolbox, the fers:detect dialog, the map after the
dialog's run and the example model in the Graphical Modeler, and writes the evaluation report.

Settings come from the environment: FERS_SHOTS_WORK (folder with demo_scene.tif, demo_truth.tif;
the PNGs, the report and session.log go there too). The session writes `done` (or `failed`) in that
folder at the end; the driver then closes QGIS.
"""

import os
import time
import traceback

import processing
from qgis.core import QgsApplication, QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import Qt, QTimer
from qgis.PyQt.QtWidgets import QAction, QApplication, QDockWidget
from qgis.utils import iface

WORK = os.environ["FERS_SHOTS_WORK"]
SCENE = os.path.join(WORK, "demo_scene.tif")
TRUTH = os.path.join(WORK, "demo_truth.tif")
_keep = []  # Python references the session needs alive (dialogs, timers, the step generator)


def log(message):
    with open(os.path.join(WORK, "session.log"), "a", encoding="utf-8") as stream:
        stream.write(f"{time.strftime('%H:%M:%S')} {message}\n")


def save(widget, name):
    QApplication.processEvents()
    path = os.path.join(WORK, f"raw_{name}.png")
    if not widget.grab().save(path):
        raise RuntimeError(f"could not save {path}")
    log(f"saved {path} ({widget.width()}x{widget.height()})")


def toolbox():
    dock = iface.mainWindow().findChild(QDockWidget, "ProcessingToolbox")
    if dock is None:
        raise RuntimeError("the Processing Toolbox dock is missing (is the Processing plugin enabled?)")
    return dock


def expand_provider(dock, name):
    """Expand the provider's node and its groups in the toolbox tree; the node's index."""
    tree = dock.algorithmTree
    model = tree.model()
    for row in range(model.rowCount()):
        index = model.index(row, 0)
        if model.data(index) == name:
            tree.expand(index)
            for child in range(model.rowCount(index)):
                tree.expand(model.index(child, 0, index))
            return index
    raise RuntimeError(f"no provider named {name!r} in the toolbox: "
                       f"{[model.data(model.index(r, 0)) for r in range(model.rowCount())]}")


def wait_until(condition, timeout, what):
    """A step item: the runner polls `condition` until it holds (or fails after `timeout` seconds)."""
    return ("wait", condition, time.time() + timeout, what)


def steps():
    window = iface.mainWindow()
    window.showNormal()
    window.resize(1440, 900)
    window.move(0, 0)
    for name in ("Browser", "Browser2", "LayerStyling", "Overview"):
        dock = window.findChild(QDockWidget, name)
        if dock is not None:
            dock.hide()
    yield 2.0

    scene = QgsRasterLayer(SCENE, "Demo scene (bands 1, 2, 3)")
    if not scene.isValid():
        raise RuntimeError(f"cannot open {SCENE}")
    QgsProject.instance().addMapLayer(scene)
    dock = toolbox()
    dock.show()
    dock.raise_()
    window.resizeDocks([dock], [400], Qt.Orientation.Horizontal)  # wide enough for the algorithm names
    expand_provider(dock, "FERS")
    yield 1.5
    save(dock, "toolbox")

    dialog = processing.createAlgorithmDialog("fers:detect", {})
    _keep.append(dialog)
    dialog.setParameters({"INPUT": scene.id(), "OUTPUT_MASK": "TEMPORARY_OUTPUT",
                          "OUTPUT_POLYGONS": "TEMPORARY_OUTPUT"})
    dialog.resize(900, 720)
    dialog.show()
    yield 1.5
    save(dialog, "detect_dialog")

    before = set(QgsProject.instance().mapLayers())
    dialog.runAlgorithm()
    yield wait_until(lambda: len(set(QgsProject.instance().mapLayers()) - before) >= 3, 300,
                     "the dialog's run loading scores, mask and objects")
    yield 1.0
    save(dialog, "detect_log")
    scores_path = dialog.results()["OUTPUT"]
    dialog.close()
    added = [QgsProject.instance().mapLayer(i) for i in set(QgsProject.instance().mapLayers()) - before]
    log("loaded: " + ", ".join(f"{layer.name()} ({layer.source()})" for layer in added))
    order = [layer.name() for layer in QgsProject.instance().layerTreeRoot().layerOrder()]
    log(f"layer order (top first): {order}")

    canvas = iface.mapCanvas()
    yield 1.0  # the window settles (message bar, docks) before the map is fitted to the scene
    canvas.setExtent(scene.extent())
    canvas.refresh()
    yield 1.0
    yield wait_until(lambda: not canvas.isDrawing(), 60, "the map to draw")
    yield 1.0
    save(window, "detection")

    rx_path = os.path.join(WORK, "global_rx.tif")
    processing.run("fers:rx", {"INPUT": SCENE, "OUTPUT": rx_path})
    rx = QgsRasterLayer(rx_path, "Global RX (fers:rx)")
    fers = QgsRasterLayer(scores_path, "FERS (fers:detect)")
    _keep.extend([rx, fers])
    processing.run("fers:evaluate", {"SCORES": [fers, rx], "GROUND_TRUTH": TRUTH,
                                     "OUTPUT_HTML": os.path.join(WORK, "report.html")})
    log("report written")

    from processing.modeler.ModelerDialog import ModelerDialog

    modeler = ModelerDialog.create(QgsApplication.processingRegistry().createAlgorithmById(
        "fers:detect_mask_polygons_report"))
    _keep.append(modeler)
    modeler.resize(1440, 760)
    modeler.show()
    yield 1.0
    zoom = modeler.findChild(QAction, "mActionZoomToItems")
    if zoom is not None:
        zoom.trigger()
    yield 1.0
    save(modeler, "modeler")
    modeler.setDirty(False)
    modeler.close()


def finish(status):
    open(os.path.join(WORK, status), "w").close()
    log(status)


def run(sequence):
    def advance():
        try:
            item = next(sequence)
        except StopIteration:
            finish("done")
            return
        except Exception:  # noqa: BLE001 (every failure ends the session with its traceback)
            log(traceback.format_exc())
            finish("failed")
            return
        if isinstance(item, tuple):
            _, condition, deadline, what = item

            def poll():
                try:
                    ready = condition()
                except Exception:  # noqa: BLE001
                    log(traceback.format_exc())
                    finish("failed")
                    return
                if ready:
                    advance()
                elif time.time() > deadline:
                    log(f"timed out waiting for {what}")
                    finish("failed")
                else:
                    QTimer.singleShot(250, poll)

            poll()
        else:
            QTimer.singleShot(int(item * 1000), advance)

    _keep.append(sequence)
    QTimer.singleShot(0, advance)


log("session started")
run(steps())
