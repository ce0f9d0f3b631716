"""Where and how the networks compute: device, arithmetic precision and PyTorch threads."""

from contextlib import contextmanager

import torch

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


PRECISIONS = ("auto", "float32", "mixed", "bfloat16")
"""Network arithmetic: "float32" everywhere; "mixed": the spectral encoder and the spatial trunk in
bfloat16, the rest in float32 (networks.inference.MIXED_PARTS; AUC within 0.0002 of float32 on the
real scenes); "bfloat16": autocast everywhere (AUC moved by up to 0.0065); "auto": "mixed" where the
device computes in bfloat16 natively (CPUs with AVX-512 BF16 or AMX, CUDA GPUs that support it),
else "float32", and only for a model whose provenance records that its AUC was checked under
"mixed" (MIXED_PRECISION_CHECKED: the bundled model, within 0.00025 on the 11 real scenes); the FERS
authors' checkpoints moved by up to 0.014 under "mixed", so unchecked models run float32."""


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


def resolve_precision(precision, device, model=None):
    """The precision a run uses: PRECISIONS minus "auto" (float32 for a `model` without the mixed check)."""
    if precision not in PRECISIONS:
        raise InputError(f"Unknown precision '{precision}': use one of {', '.join(PRECISIONS)}.")
    if precision == "auto":
        checked = model is None or mixed_precision_checked(model)
        return "mixed" if checked and bfloat16_native(device) else "float32"
    return precision


@contextmanager
def network_precision(precision, device):
    """Autocast the networks to bfloat16 for the "bfloat16" precision (CPU or CUDA); nothing otherwise."""
    if resolve_precision(precision, device) != "bfloat16":
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
