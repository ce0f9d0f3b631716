"""Tiled network inference over a strip of rows, with results independent of the tiling
where the network allows it.

A *strip buffer* holds image rows [buffer_row, buffer_row + buffer_rows) over the full image
width; the caller asks for features of output rows [out_row, out_row + out_rows) inside it.

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

from .networks.spectral import SpectralEnhancer, pad_image_edges
from .tile_settings import SPATIAL_BATCH_PIXELS, SPATIAL_MARGIN, SPATIAL_TILE, SPECTRAL_CORE


def buffer_margin(spatial_tile=SPATIAL_TILE, spatial_margin=SPATIAL_MARGIN, with_spatial=True):
    """Rows of context a strip buffer needs above and below its output rows."""
    return max(SpectralEnhancer.HALO, spatial_tile if with_spatial else 0)


def _tile_starts(length, core):
    return list(range(0, length, core))


def spectral_features(network, buffer, buffer_row, out_row, out_rows, image_height, device, core=SPECTRAL_CORE):
    """F_spe (bands, out_rows, width) for output rows of a strip buffer (bands, rows, width) tensor."""
    halo = SpectralEnhancer.HALO
    bands, _, width = buffer.shape
    result = torch.empty((network.bands, out_rows, width), dtype=torch.float32)
    for row in _tile_starts(out_rows, core):
        rows = min(core, out_rows - row)
        top = out_row + row  # image row of the core's first row
        read_top, read_bottom = max(top - halo, 0), min(top + rows + halo, image_height)
        pad_top, pad_bottom = halo - (top - read_top), halo - (read_bottom - top - rows)
        for col in _tile_starts(width, core):
            cols = min(core, width - col)
            read_left, read_right = max(col - halo, 0), min(col + cols + halo, width)
            pad_left, pad_right = halo - (col - read_left), halo - (read_right - col - cols)
            tile = buffer[:, read_top - buffer_row:read_bottom - buffer_row, read_left:read_right]
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
                     tile=SPATIAL_TILE, margin=SPATIAL_MARGIN, batch_size=None):
    """F_spa (bands, out_rows, width) for output rows of a strip buffer, from overlapping tiles."""
    bands, _, width = buffer.shape
    result = torch.empty((network.bands, out_rows, width), dtype=torch.float32)
    row_windows = _spatial_windows(out_row, out_rows, image_height, tile, margin)
    col_windows = _spatial_windows(0, width, width, tile, margin)
    jobs = [(r, c) for r in row_windows for c in col_windows]
    batch_size = batch_size or max(1, SPATIAL_BATCH_PIXELS // (row_windows[0][3] * col_windows[0][3]))
    for start in range(0, len(jobs), batch_size):
        batch_jobs = jobs[start:start + batch_size]
        tiles = [buffer[:, r[2] - buffer_row:r[2] - buffer_row + r[3], c[2]:c[2] + c[3]] for r, c in batch_jobs]
        outputs = network(channels_last(torch.stack(tiles).to(device))).float().cpu()
        for (r, c), output in zip(batch_jobs, outputs):
            core_rows = slice(r[0] - r[2], r[0] - r[2] + r[1])
            core_cols = slice(c[0] - c[2], c[0] - c[2] + c[1])
            result[:, r[0] - out_row:r[0] - out_row + r[1], c[0]:c[0] + c[1]] = output[:, core_rows, core_cols]
    return result


def channels_last(tensor):
    """NHWC layout: PyTorch's CPU convolutions run several times faster on it (measured: bench/)."""
    return tensor.contiguous(memory_format=torch.channels_last)


def as_tensor(array):
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
