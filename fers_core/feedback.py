"""A minimal progress/cancel/log interface, so the engine never depends on QGIS."""

import time

from .errors import Cancelled


class Feedback:
    """Default feedback: silent and never cancelled. Subclass or adapt for QGIS or a CLI."""

    def set_progress(self, percent):
        """Report progress in percent (0-100)."""

    def is_cancelled(self):
        return False

    def info(self, message):
        """Log an informational line."""

    def warning(self, message):
        """Log a warning the user should read."""

    def check_cancelled(self):
        """Raise Cancelled when the user asked to stop."""
        if self.is_cancelled():
            raise Cancelled()


class PrintFeedback(Feedback):
    """Feedback for command-line use: prints log lines with elapsed time."""

    def __init__(self, stream=None):
        import sys

        self._stream = stream or sys.stderr
        self._start = time.perf_counter()

    def _print(self, prefix, message):
        elapsed = time.perf_counter() - self._start
        print(f"[{elapsed:7.1f}s] {prefix}{message}", file=self._stream, flush=True)

    def info(self, message):
        self._print("", message)

    def warning(self, message):
        self._print("WARNING: ", message)


class ProgressRange:
    """Maps the progress of one stage (0..1) onto a percent range of the whole run."""

    def __init__(self, feedback, start, stop):
        self.feedback = feedback
        self.start = start
        self.stop = stop

    def __call__(self, fraction):
        self.feedback.check_cancelled()
        fraction = min(max(fraction, 0.0), 1.0)
        self.feedback.set_progress(self.start + (self.stop - self.start) * fraction)


class StageFeedback(Feedback):
    """Feedback for one stage of a run: its 0-100 progress becomes start..stop of the whole run; its messages start
    with `label` when given (e.g. which branch's cube they are about)."""

    def __init__(self, feedback, start, stop, label=""):
        self._feedback, self._start, self._stop = feedback, start, stop
        self._prefix = f"{label}: " if label else ""

    def set_progress(self, percent):
        self._feedback.set_progress(self._start + (self._stop - self._start) * percent / 100.0)

    def is_cancelled(self):
        return self._feedback.is_cancelled()

    def info(self, message):
        self._feedback.info(self._prefix + message)

    def warning(self, message):
        self._feedback.warning(self._prefix + message)
