"""Why writing an output failed (disk full, file-size limit, quota, read-only file system, ...), in one sentence
with the room the file needed and what is free, for the errors GDAL, SQLite and PyTorch raise while writing."""

import errno
import os
import shutil

from ..errors import OutputError


def megabytes(count):
    """A size for a sentence: kB under 0.1 MB (a small file read '0.0 MB'), else MB."""
    if count < 0.1 * 2**20:
        return f"{count / 2**10:,.1f} kB"
    return f"{count / 2**20:,.1f} MB" if count < 10 * 2**20 else f"{count / 2**20:,.0f} MB"


def free_bytes(path):
    """Free bytes on the disk holding `path` (or its nearest existing folder), None when unknown or when the file
    system has no size (a pseudo file system such as /proc or /sys: its 0 free bytes say nothing)."""
    folder = os.path.abspath(str(path))
    while folder and not os.path.isdir(folder):
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    try:
        usage = shutil.disk_usage(folder)
    except OSError:
        return None
    return usage.free if usage.total > 0 else None


_FULL_WORDS = ("no space left", "disk is full", "database or disk is full", "not enough space")
_LIMIT_WORDS = ("file too large",)
_WRITE_WORDS = ("write error", "writing", "failed writing", "file write failed", "tiffappendtostrip",
                "disk i/o error", "cannot write", "short write")


def file_size_limit():
    """This process's file-size limit in bytes (`ulimit -f`), None when unlimited."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    except (ImportError, OSError, ValueError):
        return None
    return None if soft == resource.RLIM_INFINITY else soft


def write_failure(error, destination, needed_bytes=None, always=True, written_bytes=None):
    """An OutputError saying why writing `destination` failed (disk full, file-size limit, ...) and how much
    room the run needed, or None when `error` does not look like a write failure and `always` is false.

    GDAL's messages seldom say why a write failed, so the file-size limit and the free space are checked
    too; `written_bytes`: how large the temporary's largest file had grown when the write failed (the limit is per
    file).
    """
    code = getattr(error, "errno", None)
    text = str(error).strip()
    lowered = text.lower()
    free = free_bytes(os.path.dirname(os.path.abspath(str(destination))))
    limit = file_size_limit()
    at_limit = limit is not None and written_bytes is not None and written_bytes + 2**16 >= limit
    if code == errno.EFBIG or any(word in lowered for word in _LIMIT_WORDS) or at_limit:
        reason = "the file-size limit was reached"
    elif code == errno.ENOSPC or any(word in lowered for word in _FULL_WORDS) or \
            (code is None and free is not None and (free < 2**20 or (needed_bytes and free < needed_bytes))):
        # the free space decides only for errors without a code (GDAL's and PyTorch's vague messages): a pseudo
        # file system such as /proc has no free space but refuses writes for another reason
        reason = "the disk is full"
    elif code == errno.EDQUOT:
        reason = "the disk quota is used up"
    elif code == errno.EROFS:
        reason = "the file system is read-only"
    elif not always and code is None and not any(word in lowered for word in _WRITE_WORDS):
        return None
    else:
        reason = f"the system refused the write ({text or type(error).__name__})"
    needs = []
    if needed_bytes:
        needs.append(f"the file needs up to about {megabytes(needed_bytes)} (uncompressed)")
    if reason == "the file-size limit was reached":
        needs.append(f"the limit is {megabytes(limit)}, set for this process by `ulimit -f`" if limit is not None
                     else "the largest file this file system holds")
    if free is not None:
        needs.append(f"{megabytes(free)} are free there")
    detail = f" ({'; '.join(needs)})" if needs else ""
    advice = "raise the limit, or choose" if reason.startswith("the file-size limit") else \
        "free some space, or choose" if "full" in reason or "quota" in reason else \
        "check that the location can be written (permissions, the file system), or choose"
    return OutputError(
        f"Writing '{destination}' failed: {reason}{detail}. {advice.capitalize()} another output location, then "
        "run again; no partial or temporary file was left."
    )
