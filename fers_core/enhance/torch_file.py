"""Reading and writing PyTorch files safely: weights-only loading with one-sentence errors, atomic saving."""

import os
import pickle
import warnings
from pathlib import Path

import torch

from ..errors import ModelFileError
from ..io.atomic import AtomicOutput

_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTOCOL_2_OR_LATER = b"\x80"


def read_torch_file(path, map_location="cpu"):
    """``torch.load(path, weights_only=True)`` with every failure turned into a ModelFileError."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"The model file {path} does not exist; check the path.")
    if path.is_dir():
        raise ModelFileError(f"{path} is a folder, not a model file; choose the model file itself.")
    try:
        with open(path, "rb") as stream:
            header = stream.read(4)
    except OSError as error:
        raise ModelFileError(
            f"The model file {path} cannot be read ({error.strerror}); check its permissions."
        ) from None
    if not header:
        raise ModelFileError(f"The model file {path} is empty; save or download it again.")
    if not (header.startswith(_ZIP_MAGIC) or header.startswith(_PICKLE_PROTOCOL_2_OR_LATER)):
        raise ModelFileError(
            f"{path} is not a PyTorch file, so it cannot be a FERS model; choose a model file."
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torch's notes on pickle protocols
            return torch.load(path, weights_only=True, map_location=map_location)
    except pickle.UnpicklingError as error:
        if "weights only" in str(error).lower():
            raise ModelFileError(
                f"{path} was refused and not loaded because it holds Python objects that may contain code; "
                "use a FERS model file or the authors' checkpoint folder."
            ) from None
        raise _damaged(path) from None
    except Exception:  # zip and unpickling errors of damaged files come in many types
        raise _damaged(path) from None


def _damaged(path):
    return ModelFileError(
        f"The model file {path} is damaged or incomplete (perhaps truncated by an interrupted copy); "
        "save or download it again."
    )

def save_atomically(content, path, keep_on_failure=False):
    """torch.save `content` to `path` through an AtomicOutput (a temporary name unique to this run, then a
    rename); a failed write (a full disk, a file-size limit) is an OutputError and leaves nothing."""
    path = Path(path)
    with AtomicOutput(path, keep_on_failure=keep_on_failure) as output:
        try:
            torch.save(content, output.path)
        except (RuntimeError, OSError) as error:
            failure = output.fail(error, path, always=isinstance(error, OSError))
            if failure is None:
                raise
            raise failure from None
        os.chmod(output.path, 0o666 & ~_current_umask())  # a model file is an ordinary file, as open() makes it
        output.commit()


def _current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask

