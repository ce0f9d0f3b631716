"""Import of the FERS authors' checkpoint folders (github xjpp2016/FERS) as FERS models.

A folder holds ``convh.pt``, ``enc.pt`` and ``pc.pt`` (the spectral network) and optionally
``spa_fen.pt`` (the spatial network), each a dict ``{'state_dict': ...}`` of plain tensors.
The band count is read from the tensors. Key mapping to our networks:

- convh.pt ``convh.*`` -> ``convh.*``; enc.pt ``layer1.*`` -> ``encoder.layer1.*``;
  pc.pt ``conv1/conv2/conv3.*`` -> ``pixel_head.*``.
- spa_fen.pt (the reference ``HyperSpatialResNet``): see ``SPATIAL_KEY_PREFIXES``.
"""

from pathlib import Path

import torch

from ..errors import ModelFileError
from .model_branches import load_branch
from .model_file import FersModel, load_model
from .torch_file import read_torch_file

SPECTRAL_FILES = {"convh.pt": "", "enc.pt": "encoder.", "pc.pt": "pixel_head."}
SPATIAL_FILE = "spa_fen.pt"
SPATIAL_KEY_PREFIXES = {
    "initial_conv.conv.": "false_colour.expand.",
    "initial_conv.hidden.": "false_colour.to_rgb.",
    "get_features.0.": "backbone.stem_conv.",
    "get_features.1.": "backbone.stem_bn.",
    "get_features.4.": "backbone.layer1.",
    "get_features.5.": "backbone.layer2.",
    "get_features.6.": "backbone.layer3.",
    "spp.fuse.0.": "head.reduce.",
    "spp.fuse.2.": "head.expand.",
    "spp.se.fc.0.": "head.gate.squeeze.",
    "spp.se.fc.2.": "head.gate.excite.",
}
"""Reference ``HyperSpatialResNet`` key prefixes -> ``SpatialStudent`` key prefixes.

The reference builds ``get_features`` as ``Sequential(conv1, bn1, relu, maxpool, layer1, layer2,
layer3)`` of a torchvision ResNet-34, ``initial_conv`` as ``Conv2RGB(conv, hidden)`` and ``spp`` as
``LightSPP(fuse=Sequential(conv, ReLU, conv, ReLU), se=SEBlock(fc=Sequential(conv, ReLU, conv,
Sigmoid)))``; the ResNet block names (conv1, bn1, conv2, bn2, downsample.0/1) are the same as ours.
"""


def _state_dict_of(path):
    """The tensors of one authors' checkpoint file (``{'state_dict': ...}`` or a bare state dict)."""
    try:
        content = read_torch_file(path)
    except ModelFileError as error:
        if "is not a PyTorch file" not in str(error):
            raise
        raise ModelFileError(f"{path.name} in the checkpoint folder {path.parent} is not a PyTorch file (damaged, or "
                             "not one of the FERS authors' files): download the checkpoint folder again.") from None
    if isinstance(content, dict) and isinstance(content.get("state_dict"), dict):
        content = content["state_dict"]
    if not isinstance(content, dict):
        raise ModelFileError(f"{path} holds no state dict; it is not a FERS authors' checkpoint file.")
    for key, value in content.items():
        if not isinstance(value, torch.Tensor):
            raise ModelFileError(f"{path} holds '{key}' as {type(value).__name__}, not a tensor; it is not a FERS "
                                 "authors' checkpoint file.")
    return _strip_data_parallel_prefix(content)


def _strip_data_parallel_prefix(state_dict):
    """Drop the ``module.`` prefix that ``nn.DataParallel`` adds to every key."""
    if state_dict and all(key.startswith("module.") for key in state_dict):
        return {key[len("module."):]: value for key, value in state_dict.items()}
    return state_dict


def _rename(state_dict, prefixes):
    """Rename keys by their first matching prefix; keys that match none are kept as they are."""
    renamed = {}
    for key, value in state_dict.items():
        match = next((prefix for prefix in prefixes if key.startswith(prefix)), None)
        renamed[key if match is None else prefixes[match] + key[len(match):]] = value
    return renamed


def _shape_of(state_dict, key, source):
    tensor = state_dict.get(key)
    if tensor is None or tensor.dim() != 4:
        raise ModelFileError(
            f"{source} lacks the 1x1 convolution '{key}'; it is not a FERS authors' checkpoint."
        )
    return tuple(tensor.shape)


def _spectral_branch(folder):
    state_dict = {}
    for file_name, prefix in SPECTRAL_FILES.items():
        state_dict.update({prefix + key: value for key, value in _state_dict_of(folder / file_name).items()})
    bands = _shape_of(state_dict, "convh.weight", folder / "convh.pt")[1]
    head_width = _shape_of(state_dict, "pixel_head.conv1.weight", folder / "pc.pt")[0]
    head_bands = _shape_of(state_dict, "pixel_head.conv2.weight", folder / "pc.pt")[0]
    if head_bands != bands:
        raise ModelFileError(
            f"In {folder}, convh.pt is for {bands} bands but pc.pt is for {head_bands}; "
            "the files come from different models, use one model's folder."
        )
    module = load_branch("spectral", bands, {"head_width": head_width}, state_dict, folder)
    return bands, module


def _spatial_branch(folder, bands):
    path = folder / SPATIAL_FILE
    state_dict = _rename(_state_dict_of(path), SPATIAL_KEY_PREFIXES)
    return load_branch("spatial", bands, {}, state_dict, path)


def import_authors_checkpoint(folder):
    """Read a FERS authors' checkpoint folder into a :class:`FersModel` (networks in eval mode)."""
    folder = Path(folder)
    if folder.is_file():
        if folder.name in (*SPECTRAL_FILES, SPATIAL_FILE):
            hint = f", here probably {folder.parent}"
        elif folder.suffix.lower() == ".pt":
            hint = "; a FERS model file needs no import: give it to the FERS anomaly detector's MODEL directly"
        else:
            hint = ""
        raise ModelFileError(
            f"{folder} is a file, not a checkpoint folder: choose the folder that holds the FERS authors' "
            f"checkpoint files convh.pt, enc.pt and pc.pt (and optionally {SPATIAL_FILE}){hint}."
        )
    if not folder.is_dir():
        raise ModelFileError(f"The checkpoint folder {folder} does not exist; check the path.")
    missing = [name for name in SPECTRAL_FILES if not (folder / name).is_file()]
    if missing:
        raise ModelFileError(
            f"The checkpoint folder {folder} lacks {', '.join(missing)}; it needs convh.pt, enc.pt and pc.pt "
            f"(and optionally {SPATIAL_FILE})."
        )
    bands, spectral = _spectral_branch(folder)
    branches = {"spectral": spectral}
    if (folder / SPATIAL_FILE).is_file():
        branches["spatial"] = _spatial_branch(folder, bands)
    provenance = {
        "source": f"imported from the FERS authors' checkpoint folder {folder.name}",
        "files": sorted(path.name for path in folder.glob("*.pt")),
        "reference": "FERS, Jin et al., arXiv 2510.18781 (github xjpp2016/FERS)",
        "note": "the authors selected the training epoch by AUC on their test scenes",
    }
    return FersModel(bands=bands, branches=branches, provenance=provenance)


def load_any_model(path, map_location="cpu"):
    """A FERS model from a model file, or from a FERS authors' checkpoint folder."""
    path = Path(path)
    if path.is_dir():
        return import_authors_checkpoint(path)
    return load_model(path, map_location=map_location)
