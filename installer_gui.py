"""The PyTorch installer in QGIS: the offer in the message bar and a dialog with progress, pip's output and
the result. The work is fers_core.runtime.torch_installer's; it runs in a QgsTask so QGIS stays responsive."""

from qgis.core import Qgis, QgsApplication, QgsMessageLog, QgsTask
from qgis.PyQt.QtCore import QObject, QUrl, pyqtSignal, pyqtSlot
from qgis.PyQt.QtGui import QDesktopServices
from qgis.PyQt.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
)

from .fers_core.enhance import torch_support
from .fers_core.errors import DependencyError
from .fers_core.runtime import torch_installer

TITLE = "FERS: Install PyTorch"
LINK_SCHEME = "fers"
INSTALL_LINK = f"{LINK_SCHEME}:install-torch"  # in canExecute's message, which the Toolbox shows as HTML
OFFER_TEXT = "The FERS networks (fers:detect, fers:train) need PyTorch, which is not installed."


def default_plan():
    """The plan for this QGIS: its profile's packages folder, its Python, CPU or CUDA build."""
    return torch_installer.default_plan(QgsApplication.qgisSettingsDirPath())


class InstallTask(QgsTask):
    """Runs the plan in QGIS's task manager; `line` carries pip's output, `done` the InstallResult."""

    line = pyqtSignal(str)
    done = pyqtSignal(object)

    def __init__(self, plan):
        super().__init__("Installing PyTorch for FERS", QgsTask.Flag.CanCancel)
        self.plan = plan
        self.outcome = None

    def run(self):
        try:
            self.outcome = torch_installer.install(self.plan, on_line=self.line.emit, on_progress=self.setProgress,
                                                   is_cancelled=self.isCanceled)
        except Exception as error:  # shown in the dialog, not lost in the task manager's thread
            self.outcome = torch_installer.InstallResult(
                False, f"The install failed unexpectedly ({error}); see the log.", self.plan.folder,
                self.plan.log_path, 0.0)
        return self.outcome.ok

    def finished(self, ok):  # in the main thread
        if self.outcome is None:
            self.outcome = torch_installer.InstallResult(False, "The install was cancelled; nothing was installed.",
                                                         self.plan.folder, self.plan.log_path, 0.0)
        QgsMessageLog.logMessage(self.outcome.message, "FERS",
                                 Qgis.MessageLevel.Success if self.outcome.ok else Qgis.MessageLevel.Warning)
        self.done.emit(self.outcome)


class InstallDialog(QDialog):
    """Says what will be installed where, runs the install on request and shows its progress and result."""

    finished_install = pyqtSignal(object)  # the InstallResult

    def __init__(self, plan=None, parent=None):
        super().__init__(parent)
        self.setWindowTitle(TITLE)
        self.setMinimumWidth(640)
        self.task = None
        self.result = None
        try:
            self.plan, problem = plan or default_plan(), None
        except DependencyError as error:
            self.plan, problem = None, str(error)
        layout = QVBoxLayout(self)
        self.intro = QLabel(self.intro_text(problem))
        self.intro.setWordWrap(True)
        layout.addWidget(self.intro)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.setVisible(False)
        layout.addWidget(self.progress)
        self.output = QPlainTextEdit()
        self.output.setReadOnly(True)
        self.output.setVisible(False)
        layout.addWidget(self.output)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        self.buttons = QDialogButtonBox()
        self.install_button = self.buttons.addButton("Install", QDialogButtonBox.ButtonRole.AcceptRole)
        self.install_button.setEnabled(self.plan is not None)
        self.install_button.clicked.connect(self.start)
        self.close_button = self.buttons.addButton(QDialogButtonBox.StandardButton.Close)
        self.close_button.clicked.connect(self.close_or_cancel)
        layout.addWidget(self.buttons)

    def intro_text(self, problem):
        if problem:
            return f"PyTorch cannot be installed from QGIS here: {problem}"
        plan = self.plan
        build = {"CPU": "the CPU build (a download of about 200 MB, 750 MB on disk)",
                 "CUDA": "the CUDA build for the NVIDIA GPU found here (a download of several GB)"}.get(
            plan.build, f"PyTorch {plan.build}")
        present = "PyTorch is already available; this installs it again. " if torch_support.torch_available() else ""
        return (f"{present}The FERS networks need PyTorch. This installs {build} ('{plan.spec}') into\n"
                f"{plan.folder}\nwith {plan.python} and pip. Nothing outside the QGIS profile changes and no "
                "administrator rights are needed.\n\nCommand: " + " ".join(plan.command(plan.folder)))

    def start(self):
        self.install_button.setEnabled(False)
        self.close_button.setText("Cancel")
        self.progress.setVisible(True)
        self.output.setVisible(True)
        self.status.setText("Installing…")
        self.task = InstallTask(self.plan)
        self.task.progressChanged.connect(lambda value: self.progress.setValue(int(value)))
        self.task.line.connect(self.output.appendPlainText)
        self.task.done.connect(self.show_result)
        QgsApplication.taskManager().addTask(self.task)

    def show_result(self, result):
        self.result = result
        self.task = None
        self.close_button.setText("Close")
        if result.ok:
            torch_support.use_packages_folder(result.folder)
            self.progress.setValue(100)
            self.status.setText(f"{result.message} The FERS networks can run now (restart QGIS if one still "
                                f"refuses). Log: {result.log_path}")
        else:
            self.install_button.setEnabled(True)
            self.install_button.setText("Try again")
            self.status.setText(f"{result.message} QGIS is unchanged. Log: {result.log_path}")
        self.finished_install.emit(result)

    def close_or_cancel(self):
        if self.task is not None:
            self.task.cancel()
            self.status.setText("Cancelling…")
        else:
            self.close()


def offer_in_message_bar(bar, open_installer):
    """Push the offer (text and an 'Install PyTorch…' button) to a QgsMessageBar; returns the message widget."""
    widget = bar.createMessage("FERS", OFFER_TEXT)
    button = QPushButton("Install PyTorch…")
    button.setObjectName("fers_install_torch")
    button.clicked.connect(open_installer)
    widget.layout().addWidget(button)
    bar.pushWidget(widget, Qgis.MessageLevel.Warning)
    return widget


class InstallLink(QObject):
    """Opens the installer when a `fers:install-torch` link is clicked (the Toolbox's refusal message)."""

    def __init__(self, open_installer):
        super().__init__()
        self.open_installer = open_installer

    @pyqtSlot(QUrl)
    def open(self, url):
        if url.toString() == INSTALL_LINK:
            self.open_installer()

    def register(self):
        QDesktopServices.setUrlHandler(LINK_SCHEME, self, "open")
        torch_support.set_installer_link(INSTALL_LINK)
        return self

    def unregister(self):
        QDesktopServices.unsetUrlHandler(LINK_SCHEME)
        torch_support.set_installer_link(None)
