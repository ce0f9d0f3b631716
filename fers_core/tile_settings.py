"""Default tile sizes (torch-free, so QGIS can show them without importing the networks)."""

SPECTRAL_CORE = 128
"""Core tile side (px) of spectral-branch inference; results do not depend on it."""
SPATIAL_TILE = 64
"""Spatial-branch tile side (px): the patch size the networks are trained on."""
SPATIAL_MARGIN = 8
"""Pixels trimmed from each side of a spatial tile; the central core is kept."""
