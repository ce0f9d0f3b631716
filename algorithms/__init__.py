"""Thin QGIS Processing algorithms: QGIS parameters in, fers_core calls, QGIS outputs back."""
