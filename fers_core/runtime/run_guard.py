"""A run's guard: what a run leaves behind, however it ends, and Ctrl+C / SIGTERM while it runs.

Every front end (the QGIS algorithms, ``python -m fers_core``) runs the engine inside ``RunGuard``:

- on entry it deletes the temporaries that killed runs left in the output folders (``atomic.remove_stale``:
  our names only, and only when their owner process is gone), saying so in the log;
- on exit it deletes the temporaries this run still has, and when the run failed (an error, a cancel,
  Ctrl+C) the outputs it had already committed, putting back the files they replaced, so a failed run leaves
  none of its outputs and an earlier run's outputs as they were (after a success, those are deleted);
- while it runs in the main thread, SIGINT (Ctrl+C) stops the run with ``Interrupted`` (the cleanup above
  then runs as the exception unwinds), and SIGTERM deletes the run's temporaries and outputs, then lets the
  previous handling terminate the process. The previous handlers are put back afterwards, including one
  installed outside Python (qgis_process's), which is saved and restored with sigaction.
"""

import contextlib
import ctypes
import ctypes.util
import os
import signal
import sys
import threading

from ..io import atomic


class Interrupted(BaseException):
    """Ctrl+C (SIGINT) stopped the run. A BaseException, like KeyboardInterrupt, so no `except Exception` hides it."""

    def __init__(self, message="Interrupted (Ctrl+C): the run stopped; no output and no temporary file were left."):
        super().__init__(message)


_active = []  # the guards of runs in progress (any thread)
_active_lock = threading.RLock()  # re-entrant, as the SIGTERM handler may run while its thread holds it
_handlers = None  # {signal: saved previous handling} while the guard's handlers are installed
_depth = 0
_SIG_IGN = 1  # the handler value of an ignored signal in struct sigaction


class RunGuard:
    """Context manager around one run; see the module docstring.

    `outputs`: the run's output paths (their folders are cleaned of stale temporaries). `feedback`: where the
    cleanup is reported. `keep_outputs`: keep committed outputs when the run fails (a batch keeps the rasters
    it finished).
    """

    def __init__(self, outputs=(), feedback=None, keep_outputs=False):
        self.outputs = [str(path) for path in outputs if path]
        self.feedback = feedback
        self.keep_outputs = keep_outputs
        self.thread = threading.get_ident()
        self.temporaries = {}
        self.written = []
        self.previous = []  # (backup, original) of what the committed outputs replaced
        self._lock = threading.RLock()

    def __enter__(self):
        self.thread = threading.get_ident()
        atomic.add_listener(self._on_event)
        with _active_lock:
            _active.append(self)
        _install_handlers()
        self.remove_stale()
        return self

    def remove_stale(self):
        folders = dict.fromkeys(os.path.dirname(os.path.abspath(path)) for path in self.outputs)
        found = [atomic.remove_stale(folder) for folder in folders]
        removed = [path for stale in found for path in stale.removed]
        restored = [path for stale in found for path in stale.restored]
        kept = [path for stale in found for path in stale.kept]
        if self.feedback is not None:
            if removed:
                self.feedback.info(f"Removed {len(removed)} temporary file(s) that an earlier, interrupted run left: "
                                   + ", ".join(removed))
            if restored:
                self.feedback.warning("An earlier run was killed while it replaced an output: put back the file(s) "
                                      "it had moved aside: " + ", ".join(restored))
            if kept:
                self.feedback.warning("An earlier run was killed while it replaced an output; the file(s) it had "
                                      "moved aside are kept (rename them back if you need them): " + ", ".join(kept))
        return removed

    def _on_event(self, event, temporary, files, previous=()):
        """Track this thread's temporaries and committed outputs; True when it takes charge of `previous`."""
        if temporary.thread != self.thread:
            return False
        with self._lock:
            if event == "created":
                self.temporaries[id(temporary)] = temporary
            else:
                self.temporaries.pop(id(temporary), None)
                if event == "committed" and not temporary.keep_on_failure:  # kept ones: no guard undoes them
                    self.written.extend(files)
                    self.previous.extend(previous)
                    return True
        return False

    def _hand_to_enclosing(self):
        """After a success inside another guard of this thread: give it this run's outputs and the files they
        replaced, so that its own failure can still undo them; whether there was one."""
        with _active_lock:
            enclosing = [guard for guard in _active[:_active.index(self)] if guard.thread == self.thread]
        if not enclosing:
            return False
        with self._lock:
            temporaries, written, previous = list(self.temporaries.values()), self.written, self.previous
            self.written, self.previous = [], []
        for temporary in temporaries:
            temporary.remove()
        with enclosing[-1]._lock:
            enclosing[-1].written.extend(written)
            enclosing[-1].previous.extend(previous)
        return True

    def cleanup(self, failed):
        """Delete the run's live temporaries and, when it failed, the outputs it committed, putting back the files
        they replaced (an earlier run's outputs); when it succeeded, delete those."""
        undo = failed and not self.keep_outputs
        with self._lock:
            temporaries = list(self.temporaries.values())
            written = list(self.written) if undo else []
            previous, self.previous = list(self.previous), []
            if undo:
                self.written = []
        for temporary in temporaries:
            temporary.remove()
        restored = atomic.restore_previous(previous, written, restore=undo)
        if restored and self.feedback is not None:
            with contextlib.suppress(Exception):  # never let the report hide the run's own error
                self.feedback.info("The earlier files at the outputs' names are as they were: put back "
                                   + ", ".join(restored))

    def __exit__(self, exc_type, exc, traceback):
        try:
            if exc_type is None and self._hand_to_enclosing():
                return
            self.cleanup(failed=exc_type is not None)
        finally:
            atomic.remove_listener(self._on_event)
            with _active_lock:
                if self in _active:
                    _active.remove(self)
            _restore_handlers()


# --- signals ---------------------------------------------------------------------------------------------------

class _SigAction(ctypes.Structure):
    """glibc's struct sigaction (handler, 1024-bit mask, flags, restorer)."""

    _fields_ = [("handler", ctypes.c_void_p), ("mask", ctypes.c_ulong * (1024 // (8 * ctypes.sizeof(ctypes.c_ulong)))),
                ("flags", ctypes.c_int), ("restorer", ctypes.c_void_p)]


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


def _save(number):
    """(Python's handler, the struct sigaction in force) of `number`; None when it is ignored or unknown.

    Python's own record can be stale: a program embedding Python (qgis_process) may have installed its
    handler with sigaction afterwards, so the handling in force is read with sigaction where possible.
    """
    handler = signal.getsignal(number)
    libc = _libc()
    raw = _SigAction()
    if libc is None or libc.sigaction(number, None, ctypes.byref(raw)) != 0:
        raw = None
    ignored = raw.handler == _SIG_IGN if raw is not None else handler in (None, signal.SIG_IGN)
    return None if ignored else (handler, raw)


def _restore(number, saved):
    handler, raw = saved
    signal.signal(number, signal.SIG_DFL if handler is None else handler)
    if raw is not None:  # back to exactly what was in force, a foreign handler included
        _libc().sigaction(number, ctypes.byref(raw), None)


def _install_handlers():
    global _handlers, _depth
    if threading.current_thread() is not threading.main_thread():
        return  # QGIS runs algorithms in worker threads too: only the main thread can take signals
    _depth += 1
    if _handlers is not None:
        return
    _handlers = {}
    for number, handler in ((signal.SIGINT, _on_interrupt), (signal.SIGTERM, _on_terminate)):
        saved = _save(number)
        if saved is None:
            continue  # a signal ignored on purpose (nohup, a background job) stays ignored
        try:
            signal.signal(number, handler)
        except (ValueError, OSError):
            continue
        _handlers[number] = saved


def _restore_handlers():
    global _handlers, _depth
    if threading.current_thread() is not threading.main_thread() or _handlers is None:
        return
    _depth -= 1
    if _depth > 0:
        return
    handlers, _handlers = _handlers, None
    for number, saved in handlers.items():
        try:
            _restore(number, saved)
        except (ValueError, OSError):
            pass


def _on_interrupt(number, frame):
    raise Interrupted()


def _on_terminate(number, frame):
    """Delete every run's temporaries and outputs, then terminate as the previous handling would."""
    with _active_lock:
        guards = list(_active)
    for guard in guards:
        guard.cleanup(failed=True)
    atomic.remove_all_live()
    saved = (_handlers or {}).get(number)
    if saved is not None:
        _restore(number, saved)  # then the signal again: the previous handling (by default: the process ends)
    else:
        signal.signal(number, signal.SIG_DFL)
    os.kill(os.getpid(), number)
