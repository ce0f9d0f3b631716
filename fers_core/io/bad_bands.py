"""Bands that cannot be used: marked bad in the raster's metadata, or holding no valid value at all.

The reader leaves marked bands (ENVI ``bbl`` = 0) out of a default selection; `report_band_selection` says so
in the log. A band whose every value is nodata, NaN or infinite (EnMAP L2A's absorption bands, an AVIRIS
product's bad bands set to NaN) makes every pixel invalid: `explain_no_valid_pixels` turns the resulting
"no valid pixels" error into one that names those bands and the BANDS value that leaves them out.
"""

import os
from contextlib import contextmanager

import numpy as np

from ..errors import InputError, NoValidPixels
from .reader import RasterReader


def band_ranges(numbers) -> str:
    """'3, 5-9 and 12' for [3, 5, 6, 7, 8, 9, 12] (sorted, consecutive numbers as ranges)."""
    runs = []
    for number in sorted(set(int(n) for n in numbers)):
        if runs and number == runs[-1][1] + 1:
            runs[-1][1] = number
        else:
            runs.append([number, number])
    items = [f"{first}" if first == last else f"{first}-{last}" for first, last in runs]
    return ", ".join(items[:-1]) + f" and {items[-1]}" if len(items) > 1 else "".join(items)


def band_parameter(numbers) -> str:
    """A BANDS value for `numbers`: '1-129, 136-224'."""
    return band_ranges(numbers).replace(" and ", ", ")


def report_band_selection(reader, feedback, name=None) -> None:
    """Log the bands a default selection left out as marked bad (info), or the marked bands BANDS includes
    (warning); `name` names the raster (training reads several)."""
    skipped, selected = reader.skipped_bad_bands, reader.selected_bad_bands
    whose = f"{name}'s" if name else "the raster's"
    if reader.bad_band_problem:
        feedback.warning(f"The bad-band list (bbl) in {whose} ENVI header {reader.bad_band_problem}: it is ignored "
                         "and no band is left out; list the bands to use in BANDS.")
    if skipped:
        several = len(skipped) > 1
        feedback.info(f"Band{'s' if several else ''} {band_ranges(skipped)} {'are' if several else 'is'} marked bad "
                      f"in {whose} metadata (bbl = 0) and left out: {reader.band_count} bands are used. List "
                      "bands in BANDS to choose them yourself.")
    if selected:
        several = len(selected) > 1
        feedback.warning(f"BANDS includes band{'s' if several else ''} {band_ranges(selected)}, which {whose} "
                         "metadata marks bad (bbl = 0): noisy bands can weaken the results.")
    if reader.listed_out_of_order:
        feedback.info(f"BANDS lists {whose} bands out of their order: they are used in the file's order "
                      f"({band_ranges(reader.bands)}), the order of the spectrum the networks read.")
    if reader.wavelength_problem:
        feedback.info(f"The wavelengths of {whose} bands are not used: "
                      f"{reader.wavelength_problem}. A model with wavelengths is then mapped by band index.")
    alpha = reader.alpha_band
    if alpha is not None and alpha in reader.bands:
        feedback.warning(f"BANDS includes band {alpha}, {whose} alpha (transparency) band: it is scored as a spectral "
                         "band; its 0 pixels are nodata all the same.")
    elif alpha is not None:
        feedback.info(f"Band {alpha} is {whose} alpha (transparency) band: it is left out of the bands, and the "
                      "pixels it makes transparent (0) are nodata.")


def bands_without_data(path, bands, feedback=None, nodata=()) -> list:
    """The 1-based numbers of the selected bands of `path` in which no pixel is valid (one pass, by blocks; a
    `feedback` that is cancelled stops it; `nodata`: the reader's extra nodata values)."""
    with RasterReader(path, bands, nodata=nodata) as reader:
        has_data = np.zeros(reader.band_count, dtype=bool)
        for window in reader.windows():
            if feedback is not None:
                feedback.check_cancelled()
            has_data |= reader.band_validity(window)
            if has_data.all():
                return []
        return [band for band, found in zip(reader.bands, has_data) if not found]


@contextmanager
def explain_no_valid_pixels(path, bands, feedback=None, nodata=(), mask_path=None):
    """Re-raise a NoValidPixels error of the body as one naming the bands without any valid value, if some (not
    all) are, or saying that the mask (`mask_path`, non-zero = exclude) leaves out every valid pixel; the extra pass
    this takes stops when `feedback` is cancelled. `nodata`: the run's extra nodata values."""
    try:
        yield
    except NoValidPixels:
        with RasterReader(path, bands) as reader:
            used, name = list(reader.bands), os.path.basename(reader.path)
        empty = bands_without_data(path, used, feedback, nodata)
        if not empty:
            if mask_path:
                check_mask_leaves_background(path, used, mask_path, feedback, nodata)
            raise
        keep = [band for band in used if band not in set(empty)]
        if not keep:  # every band is empty: the error's own advice (the nodata value) fits
            raise
        several = len(empty) > 1
        raise InputError(f"Band{'s' if several else ''} {band_ranges(empty)} of '{name}' hold{'' if several else 's'} "
                         "no valid value (every pixel is nodata, NaN, infinite or a fill value there), so no pixel is "
                         f"valid in every used band: leave {'them' if several else 'it'} out with BANDS "
                         f"'{band_parameter(keep)}'.") from None


def check_mask_leaves_background(path, bands, mask_path, feedback=None, nodata=()):
    """InputError when the input has valid pixels but the mask leaves every one of them out; nothing otherwise
    (one pass over the input and the mask)."""
    valid_pixels = unmasked = flagged = 0
    with RasterReader(path, bands, nodata=nodata) as reader, RasterReader(mask_path, [1]) as mask:
        for window in reader.windows():
            if feedback is not None:
                feedback.check_cancelled()
            valid = reader.read(window, dtype=np.float32)[1]
            mask_values, mask_valid = mask.read(window, dtype=np.float32)
            valid_pixels += int(valid.sum())
            unmasked += int((valid & (mask_values[0] == 0)).sum())
            flagged += int((valid & mask_valid & (mask_values[0] != 0)).sum())
    if valid_pixels == 0 or unmasked:
        return
    name, mask_name = os.path.basename(str(path)), os.path.basename(str(mask_path))
    if flagged == 0:  # nodata (or NaN) wherever the input is valid
        raise InputError(f"The mask '{mask_name}' is nodata at all {valid_pixels} valid pixels of '{name}', and a "
                         "mask's nodata pixels are left out of the background like its non-zero ones, so no "
                         "background is left: give the mask 0 where the background is (1 where it is to be left "
                         "out).") from None
    raise InputError(f"The mask '{mask_name}' leaves out all {valid_pixels} valid pixels of '{name}' (non-zero or "
                     "nodata = left out of the background), so no background is left: a mask marks what to exclude. "
                     f"If yours marks the background to use, invert it (e.g. Raster calculator: "
                     f"\"{os.path.splitext(mask_name)[0]}@1\" = 0).") from None
