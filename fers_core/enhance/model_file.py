"""FERS model files: one self-describing file per model, readable with ``weights_only=True``.

The file is ``torch.save`` of a plain dict (str, int, float, list, dict, None and tensors only)::

    format           "fers-model"
    format_version   1
    bands            band count the networks expect
    wavelengths_nm   list of band centres (nm) or None
    preprocessing    e.g. {"band_mapping": "resample_linear", "scaling": "minmax_pm1_x0.1"}
    architecture     {branch: settings}, e.g. {"spectral": {"head_width": 256}, "spatial": {}}
    branches         ["spectral", "spatial"] (those present)
    provenance       free text dict: how and on what it was trained, or where it was imported from
    state_dicts      {branch: {tensor name: tensor}}

Loading never unpickles code: ``torch.load(weights_only=True)`` refuses anything but the plain
types above, and every problem is reported as a one-sentence :class:`ModelFileError`.
"""

import os
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import ModelFileError
from ..io.atomic import AtomicOutput
from .networks.spatial import SpatialStudent
from .networks.spectral import SpectralEnhancer

FORMAT_NAME = "fers-model"
FORMAT_VERSION = 1
BRANCH_NAMES = ("spectral", "spatial")
DEFAULT_PREPROCESSING = {"band_mapping": "resample_linear", "scaling": "minmax_pm1_x0.1"}
RANDOM_INIT_DESCRIPTION = (
    "PyTorch default initialisation (convolutions: Kaiming uniform, a=sqrt(5); biases uniform), "
    "except the spatial ResNet trunk (Kaiming normal, fan-out); BN weight 1, bias 0, "
    "running mean 0, running variance 1; each branch seeded with the same seed"
)
MAX_MODEL_BANDS = 10_000
"""More bands than any imaging spectrometer records (ultraspectral sounders have under 9,000 channels): a
larger declared band count is a damaged or hostile file, refused before any network is built."""
MAX_HEAD_WIDTH = 65_536
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTOCOL_2_OR_LATER = b"\x80"
_FILE_KEYS = (
    "format", "format_version", "bands", "wavelengths_nm", "preprocessing",
    "architecture", "branches", "provenance", "state_dicts",
)


def build_branch_module(name, bands, settings):
    """A freshly initialised network for branch ``name`` with the stored ``settings``."""
    if name == "spectral":
        return SpectralEnhancer(bands, head_width=settings.get("head_width"))
    if name == "spatial":
        return SpatialStudent(bands)
    raise ModelFileError(f"Unknown model branch '{name}'; known branches are {', '.join(BRANCH_NAMES)}.")


def branch_settings(module):
    """Architecture settings of a branch network, without the band count (stored once per file)."""
    return {key: value for key, value in module.architecture().items() if key != "bands"}


def branch_input_bands(name, state_dict):
    """Band count implied by a branch's first-layer tensor, or None when it is absent."""
    first_layer = {"spectral": "convh.weight", "spatial": "false_colour.expand.weight"}[name]
    weight = state_dict.get(first_layer)
    return int(weight.shape[1]) if isinstance(weight, torch.Tensor) and weight.dim() == 4 else None


@dataclass
class FersModel:
    """A loaded model: band count, optional wavelengths and the branch networks (eval mode)."""

    bands: int
    wavelengths_nm: list = None
    branches: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    architecture: dict = field(default_factory=dict)
    preprocessing: dict = field(default_factory=lambda: dict(DEFAULT_PREPROCESSING))

    def __post_init__(self):
        if not self.architecture:
            self.architecture = {name: branch_settings(module) for name, module in self.branches.items()}

    def has_branch(self, name):
        return name in self.branches


# ---------------------------------------------------------------------------------------------
# Reading torch files safely


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


# ---------------------------------------------------------------------------------------------
# Checking and building branches


def load_branch(name, bands, settings, state_dict, source):
    """Build branch ``name`` and load ``state_dict`` into it after checking every tensor.

    ``source`` names the file or folder in messages. Returns the network in eval mode.
    """
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise ModelFileError(f"The {name} branch in {source} is not a set of tensors; the file is damaged.")
    _check_declared_sizes(name, bands, settings, state_dict, source)
    tensor_bands = branch_input_bands(name, state_dict)
    if tensor_bands is not None and tensor_bands != bands:
        raise ModelFileError(
            f"The {name} branch in {source} has tensors for {tensor_bands} bands but the model declares "
            f"{bands}; the file is inconsistent, re-export it."
        )
    try:
        with torch.device("meta"):  # shapes only: a random initialisation would be overwritten at once
            module = build_branch_module(name, bands, settings)
    except (AttributeError, TypeError, ValueError, RuntimeError):
        raise ModelFileError(f"The {name} settings in {source} are invalid; the file is damaged.") from None
    expected = module.state_dict()
    _check_tensors(name, expected, state_dict, source)
    # the network's own types (float16 storage becomes float32), always new CPU tensors owned by the module
    owned = {key: tensor.to("cpu", expected[key].dtype, copy=True) for key, tensor in state_dict.items()}
    module.load_state_dict(owned, assign=True)
    return module.eval()


def _check_declared_sizes(name, bands, settings, state_dict, source):
    """Refuse sizes the file cannot hold, before any network (or any copy of a tensor) is made.

    A tensor's shape is metadata: a few bytes of storage can be declared as billions of values (zero strides),
    and checking, converting or copying such a tensor would allocate them all. Every tensor must hold its
    values in its own storage, and the declared band count and widths must be plausible.
    """
    if not isinstance(bands, int) or isinstance(bands, bool) or not 1 <= bands <= MAX_MODEL_BANDS:
        raise ModelFileError(f"{source} declares {bands!r} bands for its {name} branch, outside 1 to "
                             f"{MAX_MODEL_BANDS:,}; the file is damaged, export it again.")
    width = (settings or {}).get("head_width") if isinstance(settings, dict) else None
    if width is not None and (not isinstance(width, int) or isinstance(width, bool)
                              or not 1 <= width <= MAX_HEAD_WIDTH):
        raise ModelFileError(f"{source} declares a {name} head width of {width!r}, outside 1 to "
                             f"{MAX_HEAD_WIDTH:,}; the file is damaged, export it again.")
    for key, tensor in state_dict.items():
        if tensor.layout != torch.strided or tensor.is_sparse:
            raise ModelFileError(f"The tensor '{key}' of the {name} branch in {source} is not a plain dense "
                                 "tensor; the file is damaged or was not written by FERS, export it again.")
        needed = tensor.numel() * tensor.element_size()
        stored = tensor.untyped_storage().nbytes() if tensor.device.type != "meta" else 0
        if needed > stored:
            raise ModelFileError(
                f"The tensor '{key}' of the {name} branch in {source} declares {tensor.numel():,} values "
                f"(shape {tuple(tensor.shape)}) but the file holds only {stored:,} bytes of them; the file is "
                "damaged or forged, and was not loaded."
            )


def _check_tensors(name, expected, stored, source):
    missing = [key for key in expected if key not in stored]
    if missing:
        raise ModelFileError(
            f"The {name} branch in {source} lacks {len(missing)} tensor(s), e.g. '{missing[0]}'; "
            "the file is incomplete or for another network, export it again."
        )
    unexpected = [key for key in stored if key not in expected]
    if unexpected:
        raise ModelFileError(
            f"The {name} branch in {source} has {len(unexpected)} unexpected tensor(s), "
            f"e.g. '{unexpected[0]}'; "
            "it was written for a different network, use a matching version of the plugin."
        )
    for key, tensor in expected.items():
        if stored[key].shape != tensor.shape:
            raise ModelFileError(
                f"The tensor '{key}' of the {name} branch in {source} has shape {tuple(stored[key].shape)} "
                f"but the network needs {tuple(tensor.shape)}; the file is inconsistent, export it again."
            )
        if stored[key].is_floating_point() and not _all_finite(stored[key]):
            raise ModelFileError(
                f"The tensor '{key}' of the {name} branch in {source} holds NaN or infinite values; "
                "the training diverged, train the model again."
            )


def _all_finite(tensor):
    """True when a floating-point tensor holds no NaN or inf (numpy for CPU float16/32/64: no thread start-up
    per tensor, which cost up to a second over the ~200 tensors of a model on a busy machine)."""
    if tensor.device.type == "cpu" and tensor.dtype in (torch.float16, torch.float32, torch.float64):
        return bool(np.isfinite(tensor.numpy()).all())
    return bool(torch.isfinite(tensor).all())


# ---------------------------------------------------------------------------------------------
# Saving and loading model files


def save_model(model, path):
    """Write ``model`` to ``path`` atomically (temporary file in the same folder, then rename)."""
    save_atomically(_file_content(model), path)


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


def _file_content(model):
    if not model.branches:
        raise ModelFileError("The model has no branch to save; train or import at least one branch first.")
    wavelengths = None if model.wavelengths_nm is None else [float(value) for value in model.wavelengths_nm]
    content = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "bands": int(model.bands),
        "wavelengths_nm": wavelengths,
        "preprocessing": dict(model.preprocessing),
        "architecture": {name: branch_settings(module) for name, module in model.branches.items()},
        "branches": list(model.branches),
        "provenance": dict(model.provenance),
        "state_dicts": {
            name: {key: value.detach().cpu() for key, value in module.state_dict().items()}
            for name, module in model.branches.items()
        },
    }
    _check_plain(content["provenance"], "provenance")
    _check_plain(content["preprocessing"], "preprocessing")
    return content


def _check_plain(value, where):
    """Refuse values that would need pickle to load (only str, numbers, lists and dicts)."""
    if type(value) is dict:
        for key, item in value.items():
            if type(key) is not str:
                raise ModelFileError(
                    f"The {where} keys must be text, not {type(key).__name__}; fix it before saving."
                )
            _check_plain(item, f"{where} '{key}'")
    elif type(value) in (list, tuple):
        for item in value:
            _check_plain(item, where)
    elif value is not None and type(value) not in (str, int, float, bool):  # exact types: subclasses need pickle
        raise ModelFileError(
            f"The {where} holds a {type(value).__name__}; "
            "use only text, numbers, lists and dicts, then save again."
        )


def load_model(path, map_location="cpu"):
    """Read and check a FERS model file; returns a :class:`FersModel` with networks in eval mode."""
    content = read_torch_file(path, map_location)
    _check_header(content, path)
    bands = content["bands"]
    architecture = content["architecture"]
    branches = {
        name: load_branch(name, bands, architecture.get(name) or {}, content["state_dicts"].get(name), path)
        for name in content["branches"]
    }
    return FersModel(
        bands=bands,
        wavelengths_nm=content["wavelengths_nm"],
        branches=branches,
        provenance=content["provenance"],
        architecture=architecture,
        preprocessing=content["preprocessing"],
    )


def _check_header(content, path):
    if isinstance(content, dict) and "state_dict" in content:
        raise ModelFileError(
            f"{path} looks like one file of the FERS authors' checkpoint folder; choose the folder instead."
        )
    if not isinstance(content, dict) or "format" not in content:
        raise ModelFileError(f"{path} is a PyTorch file but not a FERS model file; choose a FERS model file.")
    if content["format"] != FORMAT_NAME:
        raise ModelFileError(
            f"{path} has the unknown format '{content['format']}' instead of '{FORMAT_NAME}'; "
            "choose a FERS model file."
        )
    version = content.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelFileError(
            f"{path} uses model file format version {version}, "
            f"but this plugin reads version {FORMAT_VERSION}; "
            "update the plugin or export the model again."
        )
    missing = [key for key in _FILE_KEYS if key not in content]
    if missing:
        raise ModelFileError(
            f"{path} lacks the entries {', '.join(missing)}; the file is damaged, export it again."
        )
    _check_fields(content, path)


def _check_fields(content, path):
    bands, wavelengths, branches = content["bands"], content["wavelengths_nm"], content["branches"]
    if not isinstance(bands, int) or isinstance(bands, bool) or bands < 1:
        raise ModelFileError(f"{path} declares an invalid band count ({bands!r}); the file is damaged.")
    if bands > MAX_MODEL_BANDS:
        raise ModelFileError(f"{path} declares {bands:,} bands, more than the {MAX_MODEL_BANDS:,} any FERS model "
                             "can have; the file is damaged, export it again.")
    if wavelengths is not None and (
        not isinstance(wavelengths, list)
        or len(wavelengths) != bands
        or not all(isinstance(value, (int, float)) for value in wavelengths)
    ):
        raise ModelFileError(
            f"The wavelength list in {path} does not give one number per band; the file is damaged."
        )
    if not isinstance(branches, list) or not branches or any(name not in BRANCH_NAMES for name in branches):
        raise ModelFileError(
            f"{path} lists the branches {branches!r}; expected one or more of {', '.join(BRANCH_NAMES)}."
        )
    for key in ("preprocessing", "architecture", "provenance", "state_dicts"):
        if not isinstance(content[key], dict):
            raise ModelFileError(f"The '{key}' entry of {path} is not a dictionary; the file is damaged.")
    absent = [name for name in branches if name not in content["state_dicts"]]
    if absent:
        raise ModelFileError(
            f"{path} lists the {absent[0]} branch but holds no tensors for it; export it again."
        )


# ---------------------------------------------------------------------------------------------
# Random initialisation (the "random init" ablation)


def random_init_model(bands, seed=0, branches=BRANCH_NAMES):
    """A freshly initialised, untrained model (method.md section 8, "random init").

    Each branch is built under its own ``torch.manual_seed(seed)`` inside a forked RNG, so the
    spectral weights do not depend on which other branches are built, and the caller's global RNG
    state is left untouched. Initialisation: see ``RANDOM_INIT_DESCRIPTION``.
    """
    modules = {}
    for name in branches:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            modules[name] = build_branch_module(name, bands, {}).eval()
    provenance = {
        "source": "random initialisation (untrained weights)",
        "seed": int(seed),
        "initialisation": RANDOM_INIT_DESCRIPTION,
    }
    return FersModel(bands=int(bands), branches=modules, provenance=provenance)
