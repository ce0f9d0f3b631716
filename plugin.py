"""QGIS plugin object: registers the FERS Processing provider and, in the desktop, the PyTorch installer."""

from qgis.core import QgsApplication

_session = {"offered": False}  # the start-up offer to install PyTorch is made once per QGIS session


def mend_batch_html_results():
    """Let QGIS 3.22's batch dialog list HTML outputs (fers:evaluate's report) in the Results Viewer.

    Its BatchAlgorithmDialog.loadHTMLResults calls ProcessingResults.addResult without the `timestamp` that
    3.22 requires, so every batch run of an algorithm with an HTML output ends in a TypeError after all rows
    ran (and the batch summary is never shown). The timestamp gets a default (now) where it has none; versions
    whose addResult already has one, or that pass it, are left as they are. True when the mend is in place.
    """
    import inspect
    import time

    try:
        from processing.core.ProcessingResults import ProcessingResults
    except ImportError:  # no Processing GUI (qgis_process)
        return False
    add_result = ProcessingResults.addResult
    if getattr(add_result, "fers_mended", False):
        return True
    timestamp = inspect.signature(add_result).parameters.get("timestamp")
    if timestamp is None or timestamp.default is not inspect.Parameter.empty:
        return False

    def add_result_with_default_timestamp(self, icon, name, timestamp=None, result=None):
        return add_result(self, icon, name, time.localtime() if timestamp is None else timestamp, result)

    add_result_with_default_timestamp.fers_mended = True
    ProcessingResults.addResult = add_result_with_default_timestamp
    return True


class FersPlugin:
    """Registers the provider in initProcessing(), which qgis_process calls without a GUI."""

    def __init__(self, iface):
        self.iface = iface
        self.provider = None
        self.install_action = None
        self.installer = None
        self.install_link = None

    def initProcessing(self):  # noqa: N802 (QGIS API)
        from .algorithms.provider import FersProvider

        if self.provider is None:
            self.provider = FersProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self):  # noqa: N802 (QGIS API)
        self.initProcessing()
        if self.iface is None:
            return
        mend_batch_html_results()
        from qgis.PyQt.QtWidgets import QAction

        from .fers_core.enhance.torch_support import torch_available
        from .installer_gui import TITLE, InstallLink, offer_in_message_bar

        self.install_action = QAction("Install PyTorch…", self.iface.mainWindow())
        self.install_action.setObjectName("fers_install_torch_action")
        self.install_action.setToolTip(TITLE)
        self.install_action.triggered.connect(self.show_installer)
        self.iface.addPluginToMenu("&FERS", self.install_action)
        self.install_link = InstallLink(self.show_installer).register()
        if not torch_available() and not _session["offered"]:
            _session["offered"] = True
            offer_in_message_bar(self.iface.messageBar(), self.show_installer)

    def show_installer(self):
        """Open the installer dialog (Plugins > FERS > Install PyTorch, or the start-up offer's button)."""
        from .installer_gui import InstallDialog

        if self.installer is None or not self.installer.isVisible():
            self.installer = InstallDialog(parent=self.iface.mainWindow() if self.iface else None)
            self.installer.finished_install.connect(self.install_finished)
        self.installer.show()
        self.installer.raise_()
        return self.installer

    def install_finished(self, result):
        """Say how the install ended in the message bar when its dialog was closed before the end."""
        if self.iface is None or (self.installer is not None and self.installer.isVisible()):
            return
        from qgis.core import Qgis

        level = Qgis.MessageLevel.Success if result.ok else Qgis.MessageLevel.Warning
        self.iface.messageBar().pushMessage("FERS", result.message, level, 0)

    def unload(self):
        if self.install_link is not None:
            self.install_link.unregister()
            self.install_link = None
        if self.install_action is not None:
            self.iface.removePluginMenu("&FERS", self.install_action)
            self.install_action = None
        if self.installer is not None:
            self.installer.close()
            self.installer = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
