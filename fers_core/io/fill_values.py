"""Fill values a raster does not declare as nodata, found in a small sample and named in the log.

Orthorectified scenes often carry a collar of 0 or -9999 around the swath, and some products fill missing pixels
with float32's maximum. When the file declares no nodata value for them, the collar is scored as data: it distorts
the background statistics, and its edge stands out as an anomaly. The reader already treats values of magnitude
FILL_MAGNITUDE or more as invalid; `report_fill_values` says so when a sample holds any, and warns about pixels that
hold one value in every band (a spectrum no surface has), which look like an undeclared fill value.

The sample is at most nine of the raster's GDAL blocks (the corner, edge-middle and centre blocks; three strips of a
striped file), each read at a few thousand pixels: a bounded read whatever the raster's size or layout.
"""

import os

import numpy as np

from .reader import FILL_MAGNITUDE
from .windows import Window

SAMPLE_PIXELS = 4096
"""Pixels read from each sampled block (decimated; at most 2048 along a row)."""
FLAT_SHARE = 0.01
"""Warn when at least this share of the sampled pixels (and MIN_FLAT_PIXELS) hold one value in every band."""
MIN_FLAT_PIXELS = 3
MIN_FLAT_BANDS = 3
"""With fewer bands, equal values across bands are no sign of fill."""


def sample_blocks(reader):
    """(values, valid) of each sampled block, one at a time: values as float64 of shape (bands, pixels)."""
    block_rows, block_cols = reader.block_shape
    starts = [sorted({0, (size // 2) // block * block, (size - 1) // block * block})
              for size, block in ((reader.height, block_rows), (reader.width, block_cols))]
    for row in starts[0]:
        for col in starts[1]:
            window = Window(row, col, min(block_rows, reader.height - row), min(block_cols, reader.width - col))
            cols = min(window.cols, 2048)
            rows = min(window.rows, max(1, SAMPLE_PIXELS // cols))
            data, valid = reader.read(window, shape=(rows, cols))
            yield data.reshape(data.shape[0], -1), valid.ravel()


class FillSurvey:
    """What the sample says: pixels holding one value in every band, and pixels holding a fill magnitude."""

    def __init__(self, reader):
        self.sampled, self.huge_pixels, self.huge_example = 0, 0, None
        flat = []
        for values, valid in sample_blocks(reader):
            self.sampled += valid.size
            if reader.band_count >= MIN_FLAT_BANDS:
                flat.append(values[0][valid & np.all(values == values[:1], axis=0)])
            huge = np.isfinite(values) & (np.abs(values) >= FILL_MAGNITUDE)
            self.huge_pixels += int(huge.any(axis=0).sum())
            if self.huge_example is None and huge.any():
                band, index = np.argwhere(huge)[0]
                self.huge_example = (float(values[band, index]), reader.bands[band])
        self.flat = np.concatenate(flat) if flat else np.zeros(0)

    def flat_fill(self):
        """(value, pixels) of the commonest value held in every band, when enough sampled pixels hold it; or None."""
        least = max(MIN_FLAT_PIXELS, FLAT_SHARE * self.sampled)
        if self.flat.size < least:
            return None
        found, counts = np.unique(self.flat, return_counts=True)
        best = int(np.argmax(counts))
        return (float(found[best]), int(counts[best])) if counts[best] >= least else None


def _declared(nodata):
    values = sorted({value for value in nodata if value is not None}, key=str)
    if not values:
        return "declares no nodata value"
    return f"declares nodata {values[0]:g}" + (" (and others)" if len(values) > 1 else "")


def report_fill_values(reader, feedback, name=None) -> None:
    """Warn about undeclared fill values in `reader`'s sample (see the module's docstring)."""
    survey = FillSurvey(reader)
    raster = f"'{name or os.path.basename(reader.path)}'"
    if survey.huge_pixels:
        value, band = survey.huge_example
        several = survey.huge_pixels > 1
        feedback.warning(f"{survey.huge_pixels} sampled pixel{'s' if several else ''} of {raster} hold"
                         f"{'' if several else 's'} values of magnitude {FILL_MAGNITUDE:g} or more (e.g. {value:g} in "
                         f"band {band}): such values are fill, not measurements, and are treated as nodata.")
    flat = survey.flat_fill()
    if flat:
        value, count = flat
        feedback.warning(
            f"{count} of {survey.sampled} sampled pixels of {raster} ({count / survey.sampled:.0%}) hold {value:g} in "
            f"every band, and the raster {_declared(reader.nodata)}: if {value:g} marks missing data, run again with "
            f"the input nodata value INPUT_NODATA {value:g} (or declare it in the file: gdal_translate -a_nodata "
            f"{value:g} input output). As it is, these pixels are scored as data and weaken the background "
            "statistics.")
