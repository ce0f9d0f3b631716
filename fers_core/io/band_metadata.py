"""Band metadata of a raster: the bad-band list (ENVI bbl) and the band centre wavelengths in nanometres."""

_WAVELENGTH_KEYS = ("wavelength", "WAVELENGTH", "CENTRAL_WAVELENGTH_UM", "wavelengths")


def read_bad_band_flags(dataset) -> tuple:
    """(for every band of `dataset`, True when its metadata marks it bad, why a list was ignored or None).

    The mark is ENVI's bad-band list ``bbl`` (0 = bad): the band's ``bbl`` metadata item (default or ENVI domain, as
    GDAL and EnMAP-Box write it), else the dataset's ENVI header list. A value that is not a number marks nothing;
    a header list of the wrong length marks nothing and is reported.
    """
    total = dataset.RasterCount
    flags = []
    for number in range(1, total + 1):
        band = dataset.GetRasterBand(number)
        value = band.GetMetadataItem("bbl") or band.GetMetadataItem("bbl", "ENVI")
        flags.append(_is_bad_flag(value))
    if any(flags):
        return flags, None
    listed = (dataset.GetMetadata("ENVI") or {}).get("bbl")
    if listed:
        values = [value.strip() for value in listed.strip("{} ").split(",")]
        if len(values) != total:
            return [False] * total, f"has {len(values)} values for {total} bands"
        odd = sorted({value for value in values if not _is_flag(value)})
        if odd:
            return [False] * total, f"holds {', '.join(odd[:3])} besides 0 (bad) and 1 (good)"
        return [_is_bad_flag(value) for value in values], None
    return [False] * total, None


def _is_flag(value):
    try:
        return float(value) in (0.0, 1.0)
    except ValueError:
        return False


def _is_bad_flag(value):
    try:
        return value is not None and float(str(value).strip()) == 0.0
    except ValueError:
        return False


def read_wavelengths_nm(dataset, bands: list) -> list:
    """Band centre wavelengths in nanometres (see read_wavelengths), else None."""
    return read_wavelengths(dataset, bands)[0]


def read_wavelengths(dataset, bands: list) -> tuple:
    """(band centre wavelengths in nanometres of `bands`, or None; why a stored list was not used, or '').

    From GDAL band metadata (the default domain, the IMAGERY domain's CENTRAL_WAVELENGTH_UM that GDAL 3.10 and
    later write) or the ENVI header's list. Units: nanometres, micrometres or millimetres as declared; without
    units the whole list is micrometres when every value is below 30, else nanometres. A list whose units are not
    a length (ENVI's Index, Unknown, Wavenumber, GHz), that has a value that is not a number, or too few values,
    is not used: the bands are then mapped by index."""
    envi = dataset.GetMetadata("ENVI") or {}
    header_units = envi.get("wavelength_units", "")
    if header_units and _length_scale(header_units) is None:  # GDAL drops these units from the bands' metadata
        return None, f"its ENVI wavelength units are '{header_units}', not a length"
    found = []
    for band_number in bands:
        band = dataset.GetRasterBand(band_number)
        metadata = band.GetMetadata() or {}
        if not any(k in metadata for k in _WAVELENGTH_KEYS):
            metadata = band.GetMetadata("IMAGERY") or {}
        key = next((k for k in _WAVELENGTH_KEYS if k in metadata), None)
        if key is None:
            found = None
            break
        units = metadata.get("wavelength_units") or metadata.get("WAVELENGTH_UNITS") or ("um" if "_UM" in key else "")
        found.append((metadata[key], units))
    if found:
        return _in_nanometres([value for value, _ in found], [units for _, units in found], "band metadata")
    if "wavelength" not in envi:
        return None, ""
    listed = [value.strip() for value in envi["wavelength"].strip("{} ").split(",")]
    if len(listed) < max(bands):
        return None, f"its ENVI header lists {len(listed)} wavelengths for {max(bands)} or more bands"
    return _in_nanometres([listed[b - 1] for b in bands], [header_units] * len(bands), "ENVI header")


def _in_nanometres(texts, units, where):
    """(the values of `texts` in `units` in nanometres, '') or (None, why not)."""
    try:
        values = [float(str(text).split()[0]) for text in texts]
    except (ValueError, IndexError):
        bad = next(text for text in texts if not _is_number(text))
        return None, f"a wavelength in its {where} is '{bad}', not a number"
    if not any(units):
        return [v * (1000.0 if max(values) < 30 else 1.0) for v in values], ""
    declared = next(u for u in units if u)
    scales = [_length_scale(u or declared) for u in units]  # a band without units takes the list's
    if any(scale is None for scale in scales):
        odd = next(u for u, scale in zip(units, scales) if scale is None)
        return None, f"its wavelength units '{odd}' are not a length"
    return [v * scale for v, scale in zip(values, scales)], ""


def _length_scale(units):
    """Nanometres per unit of a wavelength unit name, or None when it names no length."""
    name = str(units).strip().lower().replace("\u03bc", "\u00b5")  # Greek mu as the micro sign
    if name in ("nm", "nanometer", "nanometers", "nanometre", "nanometres"):
        return 1.0
    if name in ("um", "\u00b5m", "micron", "microns") or name.startswith("micromet"):
        return 1000.0
    if name in ("mm", "millimeter", "millimeters", "millimetre", "millimetres"):
        return 1e6
    return None


def _is_number(text):
    try:
        float(str(text).split()[0])
        return True
    except (ValueError, IndexError):
        return False
