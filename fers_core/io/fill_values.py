"""Fill values a raster does not declare as nodata, found in a small sample and named in the log.

Orthorectified scenes often carry a collar of 0 or -9999 around the swath, and some products fill missing pixels
with float32's maximum. When the file declares no nodata value for them, the collar is scored as data: it distorts
the background statistics, and its edge stands out as an anomaly. The reader already treats stored values of
magnitude FILL_MAGNITUDE or more as invalid; `report_fill_values` says so when the sample holds any that no nodata
value declares, warns about pixels that hold one stored value in every band (a spectrum no surface has), which look
like an undeclared fill value, and about an extra nodata value (INPUT_NODATA) the raster's data type cannot hold.
Values are the stored ones (before scale and offset), as nodata values are compared.

The sample is at most nine of the raster's GDAL blocks (the corner, edge-middle and centre blocks; three strips of a
striped file), each read at a few thousand pixels: a bounded read for tiled and striped files (a file stored as one
compressed block is decoded whole, as by any read).
"""

import os

import numpy as np

from .reader import FILL_MAGNITUDE, stored_nodata
from .windows import Window

SAMPLE_PIXELS = 4096
"""Pixels read from each sampled block (decimated; at most 2048 along a row)."""
FLAT_SHARE = 0.01
"""Warn when at least this share of the sampled pixels (and MIN_FLAT_PIXELS) hold one value in every band."""
MIN_FLAT_PIXELS = 3
MIN_FLAT_BANDS = 3
"""With fewer bands, equal values across bands are no sign of fill."""


def sample_blocks(reader):
    """(stored values, declared) of each sampled block, one at a time: values of shape (bands, pixels), declared
    (pixels) True where a nodata value or the mask marks the pixel missing (RasterReader.read_stored)."""
    block_rows, block_cols = reader.block_shape
    starts = [sorted({0, (size // 2) // block * block, (size - 1) // block * block})
              for size, block in ((reader.height, block_rows), (reader.width, block_cols))]
    for row in starts[0]:
        for col in starts[1]:
            window = Window(row, col, min(block_rows, reader.height - row), min(block_cols, reader.width - col))
            cols = min(window.cols, 2048)
            rows = min(window.rows, max(1, SAMPLE_PIXELS // cols))
            values, declared = reader.read_stored(window, shape=(rows, cols))
            yield values.reshape(values.shape[0], -1), declared.ravel()


class FillSurvey:
    """What the sample says: pixels holding one value in every band, and pixels holding a fill magnitude that no
    nodata value declares."""

    def __init__(self, reader):
        self.sampled, self.huge_pixels, self.huge_example = 0, 0, None
        self.partial_extra = 0  # pixels an extra nodata value leaves out although some bands hold other values
        flat = []
        extra = [stored for stored in (stored_nodata(value, reader.stored_dtype) for value in reader.extra_nodata)
                 if stored is not None]
        for values, declared in sample_blocks(reader):
            self.sampled += declared.size
            for value in extra:
                held = values == value
                self.partial_extra += int((held.any(axis=0) & ~held.all(axis=0)).sum())
            usable = ~declared  # and, for floating-point values, finite and below the fill magnitude
            if values.dtype.kind in "fc":
                finite = np.isfinite(values)
                huge = finite & (np.abs(values) >= FILL_MAGNITUDE) & ~declared
                self.huge_pixels += int(huge.any(axis=0).sum())
                if self.huge_example is None and huge.any():
                    band, index = np.argwhere(huge)[0]
                    self.huge_example = (values[band, index], reader.bands[band])
                usable &= finite.all(axis=0) & ~huge.any(axis=0)
            if reader.band_count >= MIN_FLAT_BANDS:
                flat.append(values[0][usable & np.all(values == values[:1], axis=0)])
        self.flat = np.concatenate(flat) if flat else np.zeros(0)

    def flat_fill(self):
        """(value, pixels) of the commonest value held in every band, when enough sampled pixels hold it; or None."""
        least = max(MIN_FLAT_PIXELS, FLAT_SHARE * self.sampled)
        if self.flat.size < least:
            return None
        found, counts = np.unique(self.flat, return_counts=True)
        best = int(np.argmax(counts))
        return (found[best], int(counts[best])) if counts[best] >= least else None


def value_text(value) -> str:
    """A stored value as the analyst types it: -9999, 4294967295, -0.005 (float32's shortest), 3.4028235e+38."""
    number = float(value)
    if number.is_integer() and abs(number) < 1e15:
        return str(int(number))
    with np.errstate(over="ignore"):  # beyond float32's range: shown as the float64 it is
        single = np.float32(number)
    return str(single) if float(single) == number else repr(number)


def _declared(reader):
    """What the raster and the run declare as nodata, for the warning."""
    own = sorted({value for value in reader.nodata if value is not None and not np.isnan(value)})
    parts = [f"declares nodata {value_text(own[0])}" + (" (and others)" if len(own) > 1 else "") if own
             else "declares no nodata value"]
    if reader.extra_nodata:
        parts.append("the input nodata value (INPUT_NODATA) is " + ", ".join(map(value_text, reader.extra_nodata)))
    return "; ".join(parts)


def report_fill_values(reader, feedback, name=None) -> None:
    """Warn about undeclared fill values in `reader`'s sample, and about extra nodata values its data type cannot
    hold (see the module's docstring)."""
    survey = FillSurvey(reader)
    raster = f"'{name or os.path.basename(reader.path)}'"
    impossible = [value for value in reader.extra_nodata if stored_nodata(value, reader.stored_dtype) is None]
    if impossible:
        feedback.warning(f"The input nodata value {value_text(impossible[0])} cannot occur in {raster}, whose values "
                         f"are {reader.stored_dtype.name}: it leaves no pixel out; give a value the raster can hold.")
    if survey.huge_pixels:
        value, band = value_text(survey.huge_example[0]), survey.huge_example[1]
        several = survey.huge_pixels > 1
        feedback.warning(f"{survey.huge_pixels} sampled pixel{'s' if several else ''} of {raster} hold"
                         f"{'' if several else 's'} values of magnitude {FILL_MAGNITUDE:g} or more (e.g. {value} in "
                         f"band {band}) that no nodata value declares: such values are fill, not measurements, and "
                         "are treated as nodata.")
    if reader.band_count > 1 and survey.partial_extra >= max(MIN_FLAT_PIXELS, FLAT_SHARE * survey.sampled):
        value = ", ".join(map(value_text, reader.extra_nodata))
        feedback.warning(
            f"{survey.partial_extra} of {survey.sampled} sampled pixels of {raster} "
            f"({survey.partial_extra / survey.sampled:.0%}) hold the input nodata value {value} in some bands but not "
            "in all: a pixel is nodata when any band it uses holds it, so these are left out as well. If the value is "
            "a real measurement in some bands, leave INPUT_NODATA empty and exclude the collar with a mask instead.")
    flat = survey.flat_fill()
    if flat:
        value, count = value_text(flat[0]), flat[1]
        advice = (f"declare it in the file (gdal_translate -a_nodata {value} input output), as INPUT_NODATA holds "
                  "one value" if reader.extra_nodata else
                  f"run again with the input nodata value {value} (INPUT_NODATA; --nodata on the command line), or "
                  f"declare it in the file (gdal_translate -a_nodata {value} input output)")
        feedback.warning(
            f"{count} of {survey.sampled} sampled pixels of {raster} ({count / survey.sampled:.0%}) hold {value} in "
            f"every band, and the raster {_declared(reader)}: if {value} marks missing data, {advice}. As it is, "
            "these pixels are scored as data and weaken the background statistics.")
