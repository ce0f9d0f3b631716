"""Engine tests (fers_core without QGIS); `Log` records an engine run's log lines."""

from fers.fers_core.feedback import Feedback


class Log(Feedback):
    """The engine Feedback of a test: keeps every info and warning line."""

    def __init__(self):
        self.infos, self.warnings = [], []

    def info(self, message):
        self.infos.append(message)

    def warning(self, message):
        self.warnings.append(message)
