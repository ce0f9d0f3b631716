"""Temporary files beside their destination, renamed into place when complete: the one mechanism every writer uses.

A temporary is named ``.<stem>[.<purpose>].partial-<host>-<pid>-<token><ext>`` in the destination's folder
(same disk, so the final rename is atomic): the owner's host and process id make it unique to its run and
let a later run recognise what a killed run left (``remove_stale``); the random token keeps two temporaries
of one process apart. Names are built from the file name only, never by editing the whole path, and from at most
its first STEM_CHARACTERS characters, so that a long legal name (and a temporary of a temporary) stays legal.

Every live temporary is in a registry, so a signal handler (``run_guard``) can delete them all, and the
run that created one can delete what it left when it fails. ``AtomicOutput.commit`` moves the finished file
and the files GDAL wrote beside it (``.hdr``, ``.aux.xml``, ``-wal`` ...) to the destination's name, after
moving aside what the destination held (``.<stem>.previous.partial-...``), which the run guard puts back when
the run fails later.
"""

import contextlib
import glob
import os
import re
import secrets
import signal
import socket
import threading
import zlib
from dataclasses import dataclass, field
from typing import NamedTuple

from ..errors import OutputError
from .write_failures import write_failure

HOST = f"{zlib.crc32(socket.gethostname().encode('utf-8', 'replace')) & 0xFFFFFF:06x}"
_NAME = re.compile(r"^\..*\.partial-([0-9a-f]{6})-(\d+)-[0-9a-f]{8}")
STEM_CHARACTERS = 40
_lock = threading.RLock()  # re-entrant: the SIGTERM handler may run while its own thread holds it
_live = {}  # id(temporary) -> Temporary
_listeners = []  # callables(event, temporary, files) of run scopes: "created", "removed", "committed"


def temporary_path(destination, purpose="", extension=None):
    """A new temporary name beside `destination`; `extension` replaces the destination's (None: keep it)."""
    folder, name = os.path.split(os.path.abspath(str(destination)))
    stem, own_extension = os.path.splitext(name)
    stem = stem[:STEM_CHARACTERS]
    extension = own_extension if extension is None else extension
    tag = f".{purpose}" if purpose else ""
    return os.path.join(folder, f".{stem}{tag}.partial-{HOST}-{os.getpid()}-{secrets.token_hex(4)}{extension}")


def owner(path):
    """(host tag, pid) of a temporary's name, or None when the name is not one of ours."""
    match = _NAME.match(os.path.basename(path))
    return (match.group(1), int(match.group(2))) if match else None


def shown_name(path):
    """How the log names a raster written by a run: its path, or "an intermediate raster" when the path is one of
    this module's temporaries (a member's or a branch's scratch file, whose name means nothing to the user)."""
    return "an intermediate raster" if owner(path) else str(path)


def process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


_PREVIOUS = re.compile(r"^(\.(.*)\.previous\.partial-[0-9a-f]{6}-\d+-[0-9a-f]{8})(.*)$")


@dataclass
class StaleFiles:
    """What remove_stale did: temporaries `removed`; earlier outputs (and their sidecars) `restored` to their names
    (a killed run had moved them aside); backups `kept` whose name is not known."""

    removed: list = field(default_factory=list)
    restored: list = field(default_factory=list)
    kept: list = field(default_factory=list)


def remove_stale(folder):
    """Clean up what runs on this host left in `folder` when they were killed (a StaleFiles).

    Only our names, and only when their owner process is gone: a live run's files are never touched. Temporaries
    are deleted. The earlier output a killed run had moved aside (``.<stem>.previous.partial-...`` with its
    sidecars) is put back whole, replacing what the killed run had put in its place (a run that did not finish
    leaves none of its outputs, as a failed one), or kept and reported when its name was shortened beyond recovery;
    it is deleted when another run has replaced the killed run's file there since, so a finished output stays.
    """
    stale = StaleFiles()
    try:
        names = os.listdir(folder)
    except OSError:
        return stale
    backups = {}  # (backup base, stem) -> [(backup path, suffix after the base)]
    for name in names:
        found = owner(name)
        if not found or found[0] != HOST or found[1] == os.getpid() or process_alive(found[1]):
            continue
        path = os.path.join(folder, name)
        if not (os.path.isfile(path) or os.path.islink(path)):
            continue
        previous = _PREVIOUS.match(name)
        if previous:
            backups.setdefault((previous.group(1), previous.group(2)), []).append((path, previous.group(3)))
            continue
        with contextlib.suppress(OSError):
            os.remove(path)
            stale.removed.append(path)
    for (_, stem), files in backups.items():
        if len(stem) >= STEM_CHARACTERS:  # maybe shortened: the name to put it back under is not known
            stale.kept += [path for path, _ in files]
            continue
        originals = [os.path.join(folder, stem + suffix) for _, suffix in files]
        if _replaced_after(files, originals):  # a later run's finished output: it stays, the older one goes
            for path, _ in files:
                with contextlib.suppress(OSError):
                    os.remove(path)
                    stale.removed.append(path)
            continue
        for original in originals:  # sidecars the killed run's file got, which would attach to the earlier one
            for suffix in STALE_SIDECARS:
                if original + suffix not in originals and os.path.isfile(original + suffix):
                    with contextlib.suppress(OSError):
                        os.remove(original + suffix)
        for (path, _), original in sorted(zip(files, originals), key=lambda pair: len(pair[1]), reverse=True):
            with contextlib.suppress(OSError):  # sidecars first, the file itself last
                os.replace(path, original)
                stale.restored.append(original)
    return stale


REPLACED_AFTER_SECONDS = 1.0
"""A destination whose file arrived this much later than the killed run moved the earlier one aside was put there
by another run (a commit moves and renames within microseconds)."""


def _replaced_after(files, originals):
    """Whether the main file of a killed run's backup group (the shortest name) was replaced at its destination after
    the killed run's commit, by another run: its inode changed later than the backup's (a rename sets it)."""
    backup, original = min(zip((path for path, _ in files), originals), key=lambda pair: len(pair[1]))
    try:
        return os.lstat(original).st_ctime > os.lstat(backup).st_ctime + REPLACED_AFTER_SECONDS
    except OSError:
        return False


def live_temporaries():
    with _lock:
        return list(_live.values())


def remove_all_live():
    """Delete every live temporary of this process (the signal handler's cleanup)."""
    for temporary in live_temporaries():
        temporary.remove()


def add_listener(listener):
    with _lock:
        _listeners.append(listener)


def remove_listener(listener):
    with _lock:
        if listener in _listeners:
            _listeners.remove(listener)


def _notify(event, temporary, files=(), previous=()):
    """Tell the listeners, the newest first; a commit goes to the first that takes charge of it (the innermost run
    guard of the committing thread), which says so: whether one did."""
    with _lock:
        listeners = list(_listeners)
    for listener in reversed(listeners):
        if listener(event, temporary, files, previous) and event == "committed":
            return True
    return False


class Temporary:
    """A scratch file beside `destination` (and any file GDAL adds under the same name plus a suffix).

    Registered while it lives; ``remove()`` (or leaving the ``with`` block) deletes it.
    """

    keep_on_failure = False

    def __init__(self, destination, purpose="", extension=None):
        self.destination = os.path.abspath(str(destination))
        self.path = temporary_path(self.destination, purpose, extension)
        extension = os.path.splitext(self.destination)[1] if extension is None else extension
        self._base = self.path[:len(self.path) - len(extension)] if extension else self.path
        self.thread = threading.get_ident()
        with _lock:
            _live[id(self)] = self
        _notify("created", self)

    def files(self):
        """The temporary file and its sidecars as they are on disk now."""
        return sorted(glob.glob(glob.escape(self._base) + "*"))

    def remove(self):
        """Delete the files (safe to call twice, and from a signal handler)."""
        for path in self.files():
            with contextlib.suppress(OSError):
                os.remove(path)
        self._forget()

    def largest_file(self):
        """The size of the temporary's largest file now (None when it has none)."""
        sizes = [os.path.getsize(path) for path in self.files() if os.path.isfile(path)]
        return max(sizes) if sizes else None

    def fail(self, error, destination, needed_bytes=None, always=True, written_bytes=None):
        """Delete the files; the OutputError saying why writing `destination` failed, from how far the file had
        grown (`written_bytes`, measured now when None; None when `error` does not look like a write failure and
        `always` is false)."""
        written = self.largest_file() if written_bytes is None else written_bytes
        self.remove()
        return write_failure(error, destination, needed_bytes, always, written_bytes=written)

    def _forget(self):
        with _lock:
            known = _live.pop(id(self), None)
        if known is not None:
            _notify("removed", self)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, traceback):
        self.remove()


class AtomicOutput(Temporary):
    """A file written under a temporary name and moved to `destination` by ``commit()``.

    `keep_on_failure`: a committed file the run keeps even when it fails later (a resume checkpoint);
    other committed files are outputs that a failed run removes again (see run_guard).
    """

    def __init__(self, destination, keep_on_failure=False):
        super().__init__(destination)
        self.keep_on_failure = keep_on_failure
        self.committed = False

    def commit(self):
        """Move the file and its sidecars to the destination's name (the main file last); the paths written.

        What the destination held (the file, its sidecars, and GDAL's sidecars of an earlier file that this one
        does not have, which GDAL would otherwise read with it: overviews, statistics, masks) is moved aside
        first. A run guard that takes charge puts it back if the run fails later and deletes it otherwise;
        without one it is deleted at once.
        """
        if os.path.exists(self.destination) and not os.path.isfile(self.destination):
            self.remove()
            raise OutputError(f"'{self.destination}' is not a regular file (a folder, device, pipe or socket): an "
                              "output would replace it. Give the output a file name.")
        destination_base = os.path.splitext(self.destination)[0] if os.path.splitext(self.destination)[1] \
            else self.destination
        moves = [(path, destination_base + path[len(self._base):]) for path in self.files()]
        moves.sort(key=lambda move: move[1] == self.destination)
        targets = {target for _, target in moves}
        stale = [self.destination + suffix for suffix in STALE_SIDECARS]
        replaced = [path for path in dict.fromkeys(sorted(targets) + stale)
                    if os.path.lexists(path) and (path in targets or os.path.isfile(path))]
        previous_base = temporary_path(self.destination, "previous", "")
        previous, written = [], []
        with _signals_deferred():  # Ctrl+C or SIGTERM between two renames would leave the earlier file aside
            try:
                for original in replaced:
                    backup = previous_base + original[len(destination_base):]
                    os.replace(original, backup)
                    previous.append(Backup(backup, original, self.destination))
                for source, target in moves:
                    os.replace(source, target)
                    written.append(Placed.at(target))
            except BaseException:
                restore_previous(previous, written)
                raise
        self.committed = True
        self._forget()
        if not _notify("committed", self, written, previous):
            restore_previous(previous, (), restore=False)
        return [placed.path for placed in written]

    def __exit__(self, exc_type, exc, traceback):
        if not self.committed:
            self.remove()


@contextlib.contextmanager
def _signals_deferred():
    """SIGINT and SIGTERM wait until the block ends (main thread only: signal handlers run there)."""
    deferred = {signal.SIGINT, signal.SIGTERM}
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, deferred)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


STALE_SIDECARS = (".aux.xml", ".ovr", ".msk", "-wal", "-shm", "-journal")
"""Files GDAL and SQLite read beside a file of the same name: an earlier output's must not outlive it."""


class Placed(NamedTuple):
    """A file a commit put at `path`, known by its device and inode (None: gone), so that an undo can tell it from
    a file another run has put there since."""

    path: str
    identity: tuple

    @classmethod
    def at(cls, path):
        return cls(path, _identity(path))

    def replaced(self):
        """Whether another file is at `path` now."""
        now = _identity(self.path)
        return now is not None and now != self.identity


def _identity(path):
    try:
        status = os.lstat(path)
    except OSError:
        return None
    return status.st_dev, status.st_ino


class Backup(NamedTuple):
    """What a commit moved aside: the `original` file (an earlier output or its sidecar), now at `backup`, for the
    commit whose main file is `destination`."""

    backup: str
    original: str
    destination: str


def restore_previous(previous, written=(), restore=True):
    """Undo commits: delete the `written` files (Placed) and put the Backups of `previous` back, or with `restore`
    false only delete the backups; the originals put back. A file another run has put at a written name since
    (two runs writing one output) stays, and so do its sidecars: the backups of that commit are deleted instead, so
    an older file never replaces a newer run's output. Errors are ignored: this runs while a run is failing."""
    replaced = {placed.path for placed in written if placed.replaced()}
    for placed in written:
        if placed.path not in replaced:
            with contextlib.suppress(OSError):
                os.remove(placed.path)
    restored = []
    for entry in reversed(list(previous)):
        with contextlib.suppress(OSError):
            if restore and entry.destination not in replaced:
                os.replace(entry.backup, entry.original)
                restored.append(entry.original)
            else:
                os.remove(entry.backup)
    return restored[::-1]
