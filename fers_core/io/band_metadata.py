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
        values = listed.strip("{} ").split(",")
        if len(values) == total:
            return [_is_bad_flag(value) for value in values], None
        return [False] * total, f"has {len(values)} values for {total} bands"
    return [False] * total, None


def _is_bad_flag(value):
    try:
        return value is not None and float(str(value).strip()) == 0.0
    except ValueError:
        return False


def read_wavelengths_nm(dataset, bands: list) -> list:
    """Band centre wavelengths in nanometres from GDAL band metadata (the default domain, or the IMAGERY domain's
    CENTRAL_WAVELENGTH_UM that GDAL 3.10 and later write) or an ENVI header, else None."""
    values = []
    for band_number in bands:
        band = dataset.GetRasterBand(band_number)
        metadata = band.GetMetadata() or {}
        if not any(k in metadata for k in _WAVELENGTH_KEYS):
            metadata = band.GetMetadata("IMAGERY") or {}
        value = next((metadata[k] for k in _WAVELENGTH_KEYS if k in metadata), None)
        if value is None:
            values = None
            break
        try:
            number = float(str(value).split()[0])
        except ValueError:
            values = None
            break
        units = (metadata.get("wavelength_units") or metadata.get("WAVELENGTH_UNITS") or "").lower()
        values.append(_to_nanometres(number, units, "_UM" in "".join(k for k in _WAVELENGTH_KEYS if k in metadata)))
    if values:
        return values
    envi = dataset.GetMetadata("ENVI") or {}
    if "wavelength" in envi:
        try:
            parsed = [float(v) for v in envi["wavelength"].strip("{} ").split(",")]
        except ValueError:
            return None
        units = envi.get("wavelength_units", "").lower()
        parsed = [_to_nanometres(v, units, False) for v in parsed]
        if len(parsed) >= max(bands):
            return [parsed[b - 1] for b in bands]
    return None


def _to_nanometres(value, units, micrometres_key):
    if micrometres_key or units.startswith("micro") or units in ("um", "µm") or (not units and value < 30):
        return value * 1000.0
    return value
