"""Neural networks of FERS: spectral enhancer (FEN), spatial student and feature restorer."""

from .restoration import FeatureRestorer
from .spatial import SpatialStudent
from .spectral import SpectralEnhancer

__all__ = ["FeatureRestorer", "SpatialStudent", "SpectralEnhancer"]
