"""Default tile sizes of the networks' tiled inference (torch-free, so QGIS can show them without importing the
networks); windows.py plans the tiles and windows from them."""

SPECTRAL_CORE = 128
"""Core tile side (px) of spectral-branch inference; results do not depend on it."""
SPATIAL_TILE = 128
"""Spatial-branch tile side (px). The networks train on 64 px patches, but the detection AUC on the real scenes
hardly depends on the tile size, and larger tiles run the branch faster with the same margin share
(bench/TILE_RESULTS.md)."""
SPATIAL_MARGIN = 16
"""Pixels trimmed from each side of a spatial tile; the central core is kept."""
SPATIAL_BATCH_PIXELS = 16 * 64 * 64
"""Pixels of spatial tiles run in one batch (16 tiles of 64 px, 4 of 128 px): bounds the activations."""
