"""Default tile sizes (torch-free, so QGIS can show them without importing the networks)."""

SPECTRAL_CORE = 128
"""Core tile side (px) of spectral-branch inference; results do not depend on it."""
SPATIAL_TILE = 128
"""Spatial-branch tile side (px). The networks train on 64 px patches, but detection AUC on the real
scenes moved by under 0.0005 (mean) for tiles of 32 to 128 px and the whole image (bench/TILE_RESULTS.md),
and 128 px tiles run the branch about twice as fast as 64 px tiles with the same margin share."""
SPATIAL_MARGIN = 16
"""Pixels trimmed from each side of a spatial tile; the central core is kept."""
SPATIAL_BATCH_PIXELS = 16 * 64 * 64
"""Pixels of spatial tiles run in one batch (16 tiles of 64 px, 4 of 128 px): bounds the activations."""

MIN_STRIP_ROWS = 16


def strip_rows(budget_rows, spatial, tile, margin):
    """Rows per strip: the budget's, at least 16, and with the spatial branch a whole number of tile
    cores (tile - 2 x margin), so no spatial tile is run for a partial core at a strip boundary."""
    rows = max(MIN_STRIP_ROWS, int(budget_rows))
    if spatial:
        core = max(1, tile - 2 * margin)
        rows = -(-rows // core) * core
    return rows
