"""The learned features of a raster, window by window (tiled network inference with exact context)."""

import numpy as np
import torch

from ..choices import Precision
from ..io.windows import detection_window_shape, grid
from .model_cache import inference_network
from .precision import network_precision
from .tiling import as_tensor, feature_placement, spatial_features, spectral_features


class FeatureStrips:
    """Yields (window, scaled x, valid, {branch: F}) for each output window of the raster.

    Windows are full-width strips when a strip fits MEMORY_MB, else (rows x cols) windows whose
    sides are whole spatial tile cores (windows.detection_window_shape), so the spatial tiles, and the
    output, are those of the full-width computation. Each window is read and preprocessed with
    exactly the context its spatial tiles and spectral halos need (tiling.feature_placement).
    """

    def __init__(self, reader, read_scaled, model, options, device):
        self.reader = reader
        self.read_scaled = read_scaled  # (scaling, window) -> (scaled model-band cube, valid): the pipeline's
        self.device = device
        self.precision = options.precision  # resolved once per run (prepare_detection), never AUTO here
        self.networks = {name: inference_network(model, name, device, self.precision is Precision.MIXED)
                         for name in options.branches}
        self.options = options
        self.spatial = "spatial" in self.networks
        bytes_per_pixel = (reader.band_count + model.bands * 4) * 4
        rows, cols = detection_window_shape(reader.width, options.block_mb * 2**20 // bytes_per_pixel, self.spatial,
                                            options.spatial_tile, options.spatial_margin)
        self.windows = grid(reader.width, reader.height, rows, cols)

    def __len__(self):
        return len(self.windows)

    def placement(self, window):
        """`window` in the buffer its features need (its tiles' and halos' context)."""
        return feature_placement(window, self.reader.height, self.reader.width, self.options.spatial_tile,
                                 self.options.spatial_margin, self.spatial)

    def compute(self, window, scaling):
        """(scaled x, valid, {branch: F}) of one output window (read with its context) under the run's Scaling."""
        placement = self.placement(window)
        scaled, valid = self.read_scaled(scaling, placement.buffer)
        buffer = as_tensor(scaled)
        inner = window.within(placement.buffer)
        features = {}
        with torch.inference_mode(), network_precision(self.precision, self.device):
            if "spectral" in self.networks:
                features["spectral"] = spectral_features(self.networks["spectral"], buffer, placement,
                                                         self.device).numpy()
            if self.spatial:
                features["spatial"] = spatial_features(self.networks["spatial"], buffer, placement, self.device,
                                                       self.options.spatial_tile, self.options.spatial_margin).numpy()
        return np.ascontiguousarray(scaled[(slice(None), *inner)]), valid[inner], features


def network_threads() -> int:
    """The PyTorch intra-op threads the networks run at in this process now."""
    return torch.get_num_threads()
