"""fers_core: the QGIS-free engine of FERS for QGIS.

Raster I/O, preprocessing, detectors, networks, training and tiling. It depends on numpy and
GDAL (and on torch for the networks) and never imports qgis, so it runs in scripts, servers and
tests without QGIS.
"""

__version__ = "0.1.0"
