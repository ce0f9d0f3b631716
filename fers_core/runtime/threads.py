"""BLAS thread count of this process: read on the submitting side, applied around each Dask task.

OpenBLAS gives bit-identical results only at a fixed thread count (its LAPACK, e.g. the
eigen-decomposition of the covariance, splits work by thread), and Dask starts its workers with
one BLAS thread. A task therefore runs at the submitting process's count, so that its numbers
are the ones a run in that process would produce. Only OpenBLAS (numpy's usual BLAS) is
controlled, through its C API; with another BLAS the count is unknown (None) and left alone.
"""

import ctypes
import os
import threading
from contextlib import contextmanager

_LOCK = threading.Lock()
_FUNCTIONS = None  # [(get, set)] of every OpenBLAS loaded in this process, once searched


def _loaded_libraries():
    try:
        with open("/proc/self/maps") as maps:
            return sorted({line.split(None, 5)[5].strip() for line in maps if line.count(" ") >= 5 and "/" in line})
    except (OSError, IndexError):
        pass
    try:  # Windows, macOS: psutil comes with dask.distributed
        import psutil

        return sorted({m.path for m in psutil.Process().memory_maps()})
    except Exception:
        return []


def _openblas_functions():
    global _FUNCTIONS
    with _LOCK:
        if _FUNCTIONS is None:
            import numpy  # noqa: F401 (its BLAS must be loaded to be found)

            found = []
            for path in _loaded_libraries():
                if "blas" not in os.path.basename(path).lower():
                    continue
                try:
                    library = ctypes.CDLL(path)
                except OSError:
                    continue
                for suffix in ("", "64_"):
                    get = getattr(library, f"openblas_get_num_threads{suffix}", None)
                    set_ = getattr(library, f"openblas_set_num_threads{suffix}", None)
                    if get is not None and set_ is not None:
                        get.restype, set_.argtypes = ctypes.c_int, [ctypes.c_int]
                        found.append((get, set_))
                        break
            _FUNCTIONS = found
        return _FUNCTIONS


def blas_threads():
    """Threads OpenBLAS uses in this process, or None when numpy's BLAS is not a controllable OpenBLAS."""
    functions = _openblas_functions()
    return int(functions[0][0]()) if functions else None


@contextmanager
def blas_threads_set(threads):
    """Run the block with `threads` BLAS threads (None or 0: leave as is); restored afterwards."""
    functions = _openblas_functions() if threads else []
    previous = [get() for get, _ in functions]
    for (_, set_), count in zip(functions, previous):
        if count != threads:
            set_(int(threads))
    try:
        yield
    finally:
        for (get, set_), count in zip(functions, previous):
            if get() != count:
                set_(count)
