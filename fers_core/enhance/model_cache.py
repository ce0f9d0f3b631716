"""Models and their inference networks kept between the detection runs of one process.

QGIS runs every Processing algorithm in its one Python process, so a session's next detection with the
same model file need not read the file again nor rebuild the inference networks (BatchNorm folding,
bfloat16 copies), a cost that adds up in batch runs over many small scenes. Models are keyed by the
file's resolved path, size and modification time, so a file rewritten in the meantime is read again; at
most MAX_MODELS are kept. A Dask worker process loads the model of a run's tasks here too, once per
worker. Only detection uses this cache: training changes its model's weights, so it always loads its own
copy.
"""

import threading
from collections import OrderedDict
from pathlib import Path

from .checkpoints import load_any_model
from .networks.inference import inference_copy

MAX_MODELS = 4
"""The bundled default's three models and one more (a user's own), so that no default run evicts a model it needs."""

_lock = threading.Lock()
_entries = OrderedDict()  # file key -> (FersModel, {(branch, device, mixed): inference network})


def _file_key(path):
    """(resolved path, sizes and times) of a model file, or of the .pt files of a checkpoint folder."""
    path = Path(path).resolve()
    files = sorted(path.glob("*.pt")) if path.is_dir() else [path]
    return str(path), tuple((file.name, file.stat().st_size, file.stat().st_mtime_ns) for file in files)


def detection_model(path):
    """load_any_model(path), or the model a previous call loaded from the unchanged file."""
    try:
        key = _file_key(path)
    except OSError:  # missing or unreadable: the loader says so clearly
        return load_any_model(path)
    with _lock:
        if key in _entries:
            _entries.move_to_end(key)
            return _entries[key][0]
    model = load_any_model(path)
    with _lock:
        _entries[key] = (model, {})
        while len(_entries) > MAX_MODELS:
            _entries.popitem(last=False)
    return model


def inference_network(model, name, device, mixed):
    """inference_copy of a branch; kept for the next run when `model` came from detection_model.

    Inference copies are only ever called, never changed, so runs (even concurrent ones) can share them.
    """
    with _lock:
        networks = next((copies for cached, copies in _entries.values() if cached is model), None)
        key = (name, str(device), bool(mixed))
        if networks is not None and key in networks:
            return networks[key]
    network = inference_copy(model.branches[name], device, mixed)
    if networks is not None:
        with _lock:
            networks[key] = network
    return network


def clear():
    """Forget every kept model (tests; or to free their memory)."""
    with _lock:
        _entries.clear()
