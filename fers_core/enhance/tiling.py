"""Tiled network inference over a window of the image, with results independent of the windows
and tiles where the network allows it.

A *buffer* holds a window of the image (Placement.buffer; feature_placement gives the context an
output window needs); the caller asks for the features of the output window (Placement.output)
inside it. Windows whose sides are whole spatial cores (windows.detection_window_shape) run exactly
the spatial tiles of a whole-image run.

- Spectral branch: its output at a pixel depends on the input within SpectralEnhancer.HALO
  px. Each core tile is run with that much real context on inner sides and with the image
  edge padding on sides that touch the image edge, so the result equals whole-image inference
  exactly, whatever the tile size.
- Spatial branch: its pyramid pooling looks at the whole input, so its output depends on the
  tile. Tiles are `tile` px squares (tile_settings.SPATIAL_TILE by default);
  only the central core (tile - 2 x margin) of each is kept, and tiles at the image edge are
  shifted inwards so every tile is full-size (windows.core_tiles). Images smaller than a tile are
  run whole.
"""

import numpy as np
import torch

from ..io.tile_settings import SPATIAL_BATCH_PIXELS, SPATIAL_MARGIN, SPATIAL_TILE, SPECTRAL_CORE
from ..io.windows import Placement, Span, Window, context_span, core_tiles, spans
from .networks.inference import PixelwiseFalseColour
from .networks.spectral import SpectralEnhancer, pad_image_edges


def feature_placement(window: Window, height: int, width: int, tile: int = SPATIAL_TILE,
                      margin: int = SPATIAL_MARGIN, spatial: bool = True) -> Placement:
    """The Placement of an output window of an image of height x width: the buffer its features need, the
    spectral halo and, with the spatial branch, every spatial tile of its cores."""
    spatial_tile = tile if spatial else None
    rows = context_span(window.row_span, height, SpectralEnhancer.HALO, spatial_tile, margin)
    cols = context_span(window.col_span, width, SpectralEnhancer.HALO, spatial_tile, margin)
    return Placement(window, Window.of(rows, cols), height, width)


def _with_halo(core: Span, halo: int, image_length: int) -> tuple:
    """(the span read for a core tile, the padding before it, the padding after it): `halo` positions of
    context on each side, from the image where it has them, else padding at the image's edge."""
    read = context_span(core, image_length, halo)
    return read, halo - (core.start - read.start), halo - (read.stop - core.stop)


def spectral_features(network, buffer: torch.Tensor, placement: Placement, device,
                      core: int = SPECTRAL_CORE) -> torch.Tensor:
    """F_spe (bands, rows, cols) of the output window of a buffer (bands, rows, cols) tensor, by core tiles."""
    halo = SpectralEnhancer.HALO
    out, origin, height, width = placement.output, placement.buffer, placement.height, placement.width
    result = torch.empty((network.bands, out.rows, out.cols), dtype=torch.float32)
    for row in spans(out.rows, core):
        read_rows, pad_top, pad_bottom = _with_halo(Span(out.row + row.start, row.length), halo, height)
        for col in spans(out.cols, core):
            read_cols, pad_left, pad_right = _with_halo(Span(out.col + col.start, col.length), halo, width)
            tile = buffer[:, read_rows.as_slice(origin.row), read_cols.as_slice(origin.col)]
            tile = channels_last(tile.unsqueeze(0).to(device))
            tile = pad_image_edges(tile, pad_top, pad_bottom, pad_left, pad_right, height, width)
            output = network.forward_unpadded(tile, context=halo)
            result[:, row.as_slice(), col.as_slice()] = output[0].float().cpu()
    return result


def spatial_features(network, buffer: torch.Tensor, placement: Placement, device, tile: int = SPATIAL_TILE,
                     margin: int = SPATIAL_MARGIN, batch_size: int = None) -> torch.Tensor:
    """F_spa (bands, rows, cols) of the output window of a buffer, from overlapping tiles (windows.core_tiles)."""
    out, origin = placement.output, placement.buffer
    result = torch.empty((network.bands, out.rows, out.cols), dtype=torch.float32)
    row_tiles = core_tiles(out.row_span, placement.height, tile, margin)
    col_tiles = core_tiles(out.col_span, placement.width, tile, margin)
    jobs = [(r, c) for r in row_tiles for c in col_tiles]
    batch_size = batch_size or max(1, SPATIAL_BATCH_PIXELS // (row_tiles[0].tile.length * col_tiles[0].tile.length))
    # An inference copy's false colour is computed pixel by pixel, independently of the pixel's position: made
    # once for the buffer (the tiles overlap), the tiles are cut from it. Others' run per tile, as convolutions.
    once = isinstance(getattr(network, "false_colour", None), PixelwiseFalseColour)
    source = network.false_colour(channels_last(buffer.unsqueeze(0).to(device)))[0] if once else buffer
    for start in range(0, len(jobs), batch_size):
        batch_jobs = jobs[start:start + batch_size]
        tiles = [source[:, r.tile.as_slice(origin.row), c.tile.as_slice(origin.col)] for r, c in batch_jobs]
        if len(tiles) == 1 and batch_size > 1:
            tiles *= 2  # PyTorch's CPU kernels round a batch of one differently: outputs then depend on the windows
        batch = channels_last(torch.stack(tiles).to(device))
        outputs = (network.from_false_colour(batch) if once else network(batch)).float().cpu()
        for (r, c), output in zip(batch_jobs, outputs):
            result[:, r.core.as_slice(out.row), c.core.as_slice(out.col)] = \
                output[:, r.core.as_slice(r.tile.start), c.core.as_slice(c.tile.start)]
    return result


def channels_last(tensor):
    """NHWC layout: PyTorch's CPU convolutions run faster on it (bench/)."""
    return tensor.contiguous(memory_format=torch.channels_last)


def as_tensor(array):
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
