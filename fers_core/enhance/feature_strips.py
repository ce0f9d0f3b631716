"""The learned features of a raster, window by window (tiled network inference with exact context)."""

import numpy as np
import torch

from ..choices import Precision
from ..io.tile_settings import window_grid, window_shape
from ..io.windows import Window
from .model_cache import inference_network
from .precision import network_precision
from .tiling import as_tensor, buffer_span, spatial_features, spectral_features


class FeatureStrips:
    """Yields (window, scaled x, valid, {branch: F}) for each output window of the raster.

    Windows are full-width strips when a strip fits MEMORY_MB, else (rows x cols) windows whose
    sides are whole spatial tile cores (tile_settings.window_shape), so the spatial tiles, and the
    output, are those of the full-width computation. Each window is read and preprocessed with
    exactly the context its spatial tiles and spectral halos need (tiling.buffer_span).
    """

    def __init__(self, reader, mapping, model, options, device):
        self.reader = reader
        self.mapping = mapping  # scaling.BandMapping of the raster's bands onto the model's
        self.device = device
        self.precision = options.precision  # resolved once per run (prepare_detection), never AUTO here
        self.networks = {name: inference_network(model, name, device, self.precision is Precision.MIXED)
                         for name in options.branches}
        self.options = options
        self.spatial = "spatial" in self.networks
        bytes_per_pixel = (reader.band_count + model.bands * 4) * 4
        rows, cols = window_shape(reader.width, options.block_mb * 2**20 // bytes_per_pixel, self.spatial,
                                  options.spatial_tile, options.spatial_margin)
        self.windows = [Window(*cell) for cell in window_grid(reader.width, reader.height, rows, cols)]

    def __len__(self):
        return len(self.windows)

    def buffer_window(self, window):
        """The window of the raster that `window`'s features need (its tiles' and halos' context)."""
        tile, margin = self.options.spatial_tile, self.options.spatial_margin
        top, bottom = buffer_span(window.row, window.rows, self.reader.height, tile, margin, self.spatial)
        left, right = buffer_span(window.col, window.cols, self.reader.width, tile, margin, self.spatial)
        return Window(top, left, bottom - top, right - left)

    def compute(self, window, scaling):
        """(scaled x, valid, {branch: F}) of one output window (read with its context) under the run's Scaling."""
        from ..pipeline.scaling import scale_window

        height, width = self.reader.height, self.reader.width
        context = self.buffer_window(window)
        scaled, valid = scale_window(self.reader, self.mapping, scaling, context)
        buffer = as_tensor(scaled)
        inner = (slice(window.row - context.row, window.row - context.row + window.rows),
                 slice(window.col - context.col, window.col - context.col + window.cols))
        place = dict(buffer_col=context.col, out_col=window.col, out_cols=window.cols, image_width=width)
        features = {}
        with torch.inference_mode(), network_precision(self.precision, self.device):
            if "spectral" in self.networks:
                features["spectral"] = spectral_features(
                    self.networks["spectral"], buffer, context.row, window.row, window.rows, height, self.device,
                    **place,
                ).numpy()
            if self.spatial:
                features["spatial"] = spatial_features(
                    self.networks["spatial"], buffer, context.row, window.row, window.rows, height, self.device,
                    self.options.spatial_tile, self.options.spatial_margin, **place,
                ).numpy()
        return np.ascontiguousarray(scaled[(slice(None), *inner)]), valid[inner], features


def network_threads() -> int:
    """The PyTorch intra-op threads the networks run at in this process now."""
    return torch.get_num_threads()
