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
from dataclasses import dataclass, field

import torch

from ..errors import ModelFileError, OutputError, capitalised
from ..io.output_safety import check_outputs
from ..io.writer import output_folder
from .model_branches import BRANCH_NAMES, MAX_MODEL_BANDS, branch_settings, build_branch_module, load_branch
from .torch_file import read_torch_file, save_atomically

FORMAT_NAME = "fers-model"
MODEL_EXTENSION = ".pt"
FORMAT_VERSION = 1
DEFAULT_PREPROCESSING = {"band_mapping": "resample_linear", "scaling": "minmax_pm1_x0.1"}
RANDOM_INIT_DESCRIPTION = (
    "PyTorch default initialisation (convolutions: Kaiming uniform, a=sqrt(5); biases uniform), "
    "except the spatial ResNet trunk (Kaiming normal, fan-out); BN weight 1, bias 0, "
    "running mean 0, running variance 1; each branch seeded with the same seed"
)
_FILE_KEYS = (
    "format", "format_version", "bands", "wavelengths_nm", "preprocessing",
    "architecture", "branches", "provenance", "state_dicts",
)


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
# Saving and loading model files


def check_model_output(path, name="the model file"):
    """OutputError unless `path` names a .pt file (a FERS model file is a PyTorch file: another name could be a
    raster, a report or a file of a checkpoint folder that the model would replace)."""
    if os.path.splitext(str(path))[1].lower() != MODEL_EXTENSION:
        stem = os.path.splitext(str(path))[0] if os.path.splitext(str(path))[1] else str(path)
        raise OutputError(capitalised(f"{name} '{path}' does not end in {MODEL_EXTENSION}: FERS model files are "
                                      f"PyTorch files named *{MODEL_EXTENSION}; give e.g. '{stem}{MODEL_EXTENSION}'."))


def save_model(model, path, inputs=()):
    """Write ``model`` to the .pt file ``path`` atomically (temporary file in the same folder, then rename), after
    checking that it is none of `inputs` ((name, path) pairs) and creating its folder when missing."""
    check_model_output(path)
    check_outputs([("the model file", path)], inputs)
    output_folder(str(path))
    save_atomically(_file_content(model), path)


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
        raise ModelFileError(f"{path} has the unknown format '{content['format']}' instead of '{FORMAT_NAME}'; "
                             "choose a FERS model file.")
    version = content.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelFileError(f"{path} uses model file format version {version}, but this plugin reads version "
                             f"{FORMAT_VERSION}; update the plugin or export the model again.")
    missing = [key for key in _FILE_KEYS if key not in content]
    if missing:
        raise ModelFileError(f"{path} lacks the entries {', '.join(missing)}; the file is damaged, export it again.")
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
    steps = [key for key in content["preprocessing"] if key not in DEFAULT_PREPROCESSING]
    if steps:  # a step this version does not know would be skipped silently
        raise ModelFileError(
            f"{path} asks for the preprocessing step '{steps[0]}', which this version of FERS does not know (it "
            f"applies {', '.join(DEFAULT_PREPROCESSING)} only): use a FERS version that reads this model, or export "
            "it again."
        )
    unknown = {key: value for key, value in content["preprocessing"].items()
               if value != DEFAULT_PREPROCESSING[key]}
    if unknown:  # detection applies DEFAULT_PREPROCESSING only: another would be misapplied silently
        key, value = next(iter(unknown.items()))
        raise ModelFileError(
            f"{path} asks for the {key.replace('_', ' ')} '{value}', which this version of FERS does not apply (it "
            f"applies '{DEFAULT_PREPROCESSING[key]}'): use a FERS version that reads this model, or export it again."
        )
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
