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


def window_shape(width, budget_pixels, spatial, tile, margin):
    """(rows, cols) of the windows detection runs on, for a budget of output pixels per window.

    Full-width strips when a strip of the minimum height fits the budget; otherwise windows of
    about square shape (the context each window reads around itself then costs least). With the
    spatial branch both sides are whole numbers of tile cores (tile - 2 x margin, at least one
    core), so the windows' spatial tiles are exactly those of a whole-image run; an image no wider
    than a tile is one tile across and is never split into columns. The spectral branch is
    tiling-invariant: its windows are at least MIN_STRIP_ROWS rows and whole SPECTRAL_CORE columns.
    """
    budget_pixels = max(1, int(budget_pixels))
    if spatial:
        unit = max(1, tile - 2 * margin)
        row_unit, min_rows = unit, unit
        splittable = width > tile and width > unit
    else:
        unit, row_unit, min_rows = SPECTRAL_CORE, 1, MIN_STRIP_ROWS
        splittable = width > unit

    def rows_for(cols):
        return max(min_rows, (budget_pixels // cols) // row_unit * row_unit)

    if width * min_rows <= budget_pixels or not splittable:
        return rows_for(width), width
    units_across = -(-width // unit)
    per_window = max(1, int(budget_pixels ** 0.5) // unit)
    chunks = -(-units_across // per_window)
    per_window = -(-units_across // chunks)  # the same number of chunks, balanced
    cols = min(width, per_window * unit)
    return rows_for(cols), cols


def window_grid(width, height, rows, cols):
    """(row, col, rows, cols) of the windows of a (rows, cols) shape covering the image, row by row."""
    return [(row, col, min(rows, height - row), min(cols, width - col))
            for row in range(0, height, rows) for col in range(0, width, cols)]
