"""A model's branch networks: building one from its stored settings, and loading checked tensors into it.

Every tensor is checked before any network or copy of it is made (declared sizes against the
storage the file holds, names and shapes against the network, finite values), so a damaged or
forged file is refused with a one-sentence ModelFileError instead of allocating or loading garbage.
"""

import numpy as np
import torch

from ..choices import MAX_MODEL_BANDS
from ..errors import ModelFileError
from .networks.spatial import SpatialStudent
from .networks.spectral import SpectralEnhancer

BRANCH_NAMES = ("spectral", "spatial")
"""More bands than any imaging spectrometer records (ultraspectral sounders have under 9,000 channels): a
larger declared band count is a damaged or hostile file, refused before any network is built."""
MAX_HEAD_WIDTH = 65_536


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
    """True when a floating-point tensor holds no NaN or inf (numpy for CPU float16/32/64: torch starts its
    threads for every tensor, which adds up over a model's many tensors on a busy machine)."""
    if tensor.device.type == "cpu" and tensor.dtype in (torch.float16, torch.float32, torch.float64):
        return bool(np.isfinite(tensor.numpy()).all())
    return bool(torch.isfinite(tensor).all())
