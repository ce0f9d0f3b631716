"""Memory guard of training: refuse, with the numbers, a training run the machine cannot hold, before any work,
instead of letting the operating system kill QGIS (pipeline.memory_guard does the same for detection).

The estimate was fitted to peaks measured on this project's recipe (both stages, CPU, float32; the resident
set of the process, 0.27 GB after its imports): about 140 bytes per model band, patch pixel and batch item
(the networks' activations and their gradients), about 812 bytes per squared model band (weights, gradients
and Adam's two moments of the layers whose size grows with the band count), 1.4 GB that does not grow with
it, and the preprocessed training cubes (model bands x pixels x 4 bytes, and one more while it is built). Measured
peaks: 50 / 800 / 2000 model bands at batch 16 of 32 px patches, 1.6 / 3.5 / 9.1 GB; 2000 bands at batch 4,
5.9 GB; 800 bands with 64 px patches, 9.0 GB (test/core/training/test_training_memory.py checks one).
"""

from ..io.reader import RasterReader
from ..pipeline.memory_guard import FIXED_ALLOWANCE, MemoryEstimate, check_memory

ACTIVATION_BYTES = 140  # per model band x patch pixel x batch item
WEIGHT_BYTES = 812  # per squared model band
TORCH_ALLOWANCE = 1400 * 2**20  # PyTorch's own and what does not grow with the band count


def estimate_training(rasters, model_bands, batch_size, patch_size, device="cpu"):
    """The MemoryEstimate (this machine's memory) of training `model_bands`-band networks on `rasters`
    (TrainingRaster) in batches of `batch_size` patches of `patch_size` px on `device` (on a GPU the networks,
    their activations and the optimiser live in the GPU's memory)."""
    sizes = []
    for raster in rasters:
        with RasterReader(raster.path, raster.bands, nodata=raster.nodata) as reader:
            sizes.append(reader.width * reader.height)
    parts = {"train on smaller background areas": 4 * model_bands * (sum(sizes) + max(sizes, default=0))}
    if str(device).split(":")[0] == "cpu":
        parts[f"lower BATCH_SIZE (now {batch_size}) or PATCH_SIZE (now {patch_size})"] = \
            ACTIVATION_BYTES * model_bands * batch_size * patch_size ** 2
        parts[f"lower MODEL_BANDS (now {model_bands})"] = WEIGHT_BYTES * model_bands ** 2
    return MemoryEstimate(f"Training a {model_bands}-band model", parts, FIXED_ALLOWANCE + TORCH_ALLOWANCE)


def check_training_memory(rasters, model_bands, batch_size, patch_size, feedback, device="cpu"):
    """Refuse (InputError) a training run whose estimate exceeds the available memory; log the numbers."""
    check_memory(estimate_training(rasters, model_bands, batch_size, patch_size, device), feedback)
