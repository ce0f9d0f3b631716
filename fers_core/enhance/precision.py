"""Where and how the networks compute: device, arithmetic precision and PyTorch threads."""

from contextlib import contextmanager

import torch

from ..choices import Precision
from ..errors import InputError


@contextmanager
def torch_threads(threads):
    """Run the block with `threads` PyTorch intra-op threads (0 or None: leave as is).

    CPU inference is reproducible bit for bit only at a fixed thread count (the kernels split
    their sums differently), so the Dask path runs every block at the submitting machine's count.
    """
    previous = torch.get_num_threads()
    if threads and threads != previous:
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


MIXED_PRECISION_CHECKED = "mixed_precision_checked"
"""Provenance key of a model whose detection AUC was measured to hold under "mixed" precision."""


def bfloat16_native(device):
    """Whether `device` has native bfloat16 arithmetic (emulated bfloat16 is slower than float32)."""
    try:
        if str(device).startswith("cuda"):
            return bool(torch.cuda.is_bf16_supported())
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # a private check that may move between PyTorch versions: assume not
        return False


def mixed_precision_checked(model):
    """Whether the model's provenance records that its AUC holds under "mixed" precision."""
    return bool((getattr(model, "provenance", None) or {}).get(MIXED_PRECISION_CHECKED))


def resolve_precision(precision, device: str, model=None) -> Precision:
    """The precision a run uses for the asked `precision` (a Precision or its string): never AUTO.

    AUTO becomes MIXED where `device` computes in bfloat16 natively and the `model` (None: any) records
    that its AUC was checked under MIXED, else FLOAT32. Called once per run (prepare_detection), so
    every window, here or on a Dask worker, uses the submitting machine's choice.
    """
    precision = Precision.parse(precision)
    if precision is Precision.AUTO:
        checked = model is None or mixed_precision_checked(model)
        return Precision.MIXED if checked and bfloat16_native(device) else Precision.FLOAT32
    return precision


@contextmanager
def network_precision(precision: Precision, device: str):
    """Autocast the networks to bfloat16 for a resolved BFLOAT16 precision (CPU or CUDA); nothing otherwise."""
    if precision is Precision.AUTO:
        raise ValueError("network_precision needs a resolved precision (resolve_precision), not AUTO")
    if precision is not Precision.BFLOAT16:
        yield
        return
    with torch.autocast(device_type="cuda" if str(device).startswith("cuda") else "cpu", dtype=torch.bfloat16):
        yield


def resolve_device(choice):
    """'auto' -> cuda when available, else cpu; 'cuda' without a GPU is an error."""
    if choice in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise InputError("DEVICE is cuda but PyTorch sees no CUDA GPU: choose auto or cpu, or install a CUDA build.")
    return choice
