"""Tiled network inference over a window of the image, with results independent of the windows
and tiles where the network allows it.

A *buffer* holds image rows [buffer_row, buffer_row + buffer_rows) and columns [buffer_col,
buffer_col + buffer_cols) (buffer_span gives the context an output window needs); the caller asks
for features of output rows [out_row, out_row + out_rows) and columns [out_col, out_col + out_cols)
inside it. Windows whose sides are whole spatial cores (tile_settings.window_shape) run exactly the
spatial tiles of a whole-image run.

- Spectral branch: its output at a pixel depends on the input within SpectralEnhancer.HALO
  px. Each core tile is run with that much real context on inner sides and with the image
  edge padding on sides that touch the image edge, so the result equals whole-image inference
  exactly, whatever the tile size.
- Spatial branch: its pyramid pooling looks at the whole input, so its output depends on the
  tile. Tiles are `tile` px squares (tile_settings.SPATIAL_TILE by default);
  only the central core (tile - 2 x margin) of each is kept, and tiles at the image edge are
  shifted inwards so every tile is full-size. Images smaller than a tile are run whole.
"""

import numpy as np
import torch

from ..io.tile_settings import SPATIAL_BATCH_PIXELS, SPATIAL_MARGIN, SPATIAL_TILE, SPECTRAL_CORE
from .networks.inference import PixelwiseFalseColour
from .networks.spectral import SpectralEnhancer, pad_image_edges


def buffer_span(start, length, image_length, spatial_tile=SPATIAL_TILE, spatial_margin=SPATIAL_MARGIN,
                with_spatial=True):
    """[first, last) image rows (or columns) the buffer of output rows [start, start + length) needs:
    the spectral halo and, with the spatial branch, every spatial tile of its cores."""
    halo = SpectralEnhancer.HALO
    first, last = max(start - halo, 0), min(start + length + halo, image_length)
    if with_spatial:
        for _, _, tile_start, tile_length in _spatial_windows(start, length, image_length, spatial_tile,
                                                              spatial_margin):
            first, last = min(first, tile_start), max(last, tile_start + tile_length)
    return first, last


def _tile_starts(length, core):
    return list(range(0, length, core))


def _columns(buffer, buffer_col, out_col, out_cols, image_width):
    width = buffer.shape[2]
    out_cols = width - (out_col - buffer_col) if out_cols is None else out_cols
    return out_cols, width if image_width is None else image_width


def spectral_features(network, buffer, buffer_row, out_row, out_rows, image_height, device, core=SPECTRAL_CORE,
                      buffer_col=0, out_col=0, out_cols=None, image_width=None):
    """F_spe (bands, out_rows, out_cols) for an output window of a buffer (bands, rows, cols) tensor.

    Columns default to the whole buffer, taken as the whole image width."""
    halo = SpectralEnhancer.HALO
    out_cols, width = _columns(buffer, buffer_col, out_col, out_cols, image_width)
    result = torch.empty((network.bands, out_rows, out_cols), dtype=torch.float32)
    for row in _tile_starts(out_rows, core):
        rows = min(core, out_rows - row)
        top = out_row + row  # image row of the core's first row
        read_top, read_bottom = max(top - halo, 0), min(top + rows + halo, image_height)
        pad_top, pad_bottom = halo - (top - read_top), halo - (read_bottom - top - rows)
        for col in _tile_starts(out_cols, core):
            cols = min(core, out_cols - col)
            left = out_col + col  # image column of the core's first column
            read_left, read_right = max(left - halo, 0), min(left + cols + halo, width)
            pad_left, pad_right = halo - (left - read_left), halo - (read_right - left - cols)
            tile = buffer[:, read_top - buffer_row:read_bottom - buffer_row,
                          read_left - buffer_col:read_right - buffer_col]
            tile = channels_last(tile.unsqueeze(0).to(device))
            tile = pad_image_edges(tile, pad_top, pad_bottom, pad_left, pad_right, image_height, width)
            output = network.forward_unpadded(tile, context=halo)
            result[:, row:row + rows, col:col + cols] = output[0].float().cpu()
    return result


def _spatial_windows(start, length, image_length, tile, margin):
    """(core start, core length, tile start, tile length) along one axis, tiles shifted inside the image."""
    if image_length <= tile:
        return [(start, length, 0, image_length)]
    core = tile - 2 * margin
    windows = []
    for core_start in range(start, start + length, core):
        core_length = min(core, start + length - core_start)
        tile_start = min(max(core_start - margin, 0), image_length - tile)
        windows.append((core_start, core_length, tile_start, tile))
    return windows


def spatial_features(network, buffer, buffer_row, out_row, out_rows, image_height, device,
                     tile=SPATIAL_TILE, margin=SPATIAL_MARGIN, batch_size=None,
                     buffer_col=0, out_col=0, out_cols=None, image_width=None):
    """F_spa (bands, out_rows, out_cols) for an output window of a buffer, from overlapping tiles.

    Columns default to the whole buffer, taken as the whole image width."""
    out_cols, width = _columns(buffer, buffer_col, out_col, out_cols, image_width)
    result = torch.empty((network.bands, out_rows, out_cols), dtype=torch.float32)
    row_windows = _spatial_windows(out_row, out_rows, image_height, tile, margin)
    col_windows = _spatial_windows(out_col, out_cols, width, tile, margin)
    jobs = [(r, c) for r in row_windows for c in col_windows]
    batch_size = batch_size or max(1, SPATIAL_BATCH_PIXELS // (row_windows[0][3] * col_windows[0][3]))
    # An inference copy's false colour is computed pixel by pixel, independently of the pixel's position: made
    # once for the buffer (the tiles overlap), the tiles are cut from it. Others' run per tile, as convolutions.
    once = isinstance(getattr(network, "false_colour", None), PixelwiseFalseColour)
    source = network.false_colour(channels_last(buffer.unsqueeze(0).to(device)))[0] if once else buffer
    for start in range(0, len(jobs), batch_size):
        batch_jobs = jobs[start:start + batch_size]
        tiles = [source[:, r[2] - buffer_row:r[2] - buffer_row + r[3], c[2] - buffer_col:c[2] - buffer_col + c[3]]
                 for r, c in batch_jobs]
        if len(tiles) == 1 and batch_size > 1:
            tiles *= 2  # PyTorch's CPU kernels round a batch of one differently: outputs then depend on the windows
        batch = channels_last(torch.stack(tiles).to(device))
        outputs = (network.from_false_colour(batch) if once else network(batch)).float().cpu()
        for (r, c), output in zip(batch_jobs, outputs):
            core_rows = slice(r[0] - r[2], r[0] - r[2] + r[1])
            core_cols = slice(c[0] - c[2], c[0] - c[2] + c[1])
            result[:, r[0] - out_row:r[0] - out_row + r[1], c[0] - out_col:c[0] - out_col + c[1]] = \
                output[:, core_rows, core_cols]
    return result


def channels_last(tensor):
    """NHWC layout: PyTorch's CPU convolutions run several times faster on it (measured: bench/)."""
    return tensor.contiguous(memory_format=torch.channels_last)


def as_tensor(array):
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
