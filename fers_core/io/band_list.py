"""The BANDS parameter of every algorithm: band numbers and ranges, checked token by token.

QGIS's own conversion of a band parameter turns a token that is not a number into band 0, so
'1,2,x' reached the reader as band 0 ("out of range"); the algorithms parse the value here instead.
"""

from collections import Counter

from ..errors import InputError

EXAMPLE = "'1-100, 120, 130-150'"


def parse_band_list(value, parameter="BANDS"):
    """1-based band numbers from text ('1-50, 60'; ',' or ';' between items) or a list of numbers or such texts.

    None, '' and [] mean all bands (None). A range 'a-b' gives a..b. Numbers are not checked against the
    raster here (the reader names the raster's band range), but every item must be a whole number.
    """
    if value is None:
        return None
    items = value if isinstance(value, (list, tuple)) else [value]
    bands = []
    for item in items:
        if isinstance(item, bool):
            raise _not_a_band(item, value, parameter)
        if isinstance(item, int):
            bands.append(item)
            continue
        if isinstance(item, float):
            if not item.is_integer():
                raise _not_a_band(item, value, parameter)
            bands.append(int(item))
            continue
        for token in str(item).replace(";", ",").split(","):
            bands.extend(_parse_token(token.strip(), value, parameter))
    check_each_band_once(bands, value, parameter)
    if not bands and any(str(item).strip() for item in items):  # ',,' or ' ; ': separators without a band
        raise InputError(f"{parameter} '{_shown(value)}' lists no band: give band numbers or ranges such as "
                         "'1-50, 60', or leave it empty to use every band.")
    return bands or None


def check_each_band_once(bands, value=None, parameter="BANDS"):
    """InputError naming the bands that `bands` lists more than once (`value`: the list as the user gave it)."""
    repeated = sorted(band for band, count in Counter(bands).items() if count > 1)
    if repeated:
        listed = ", ".join(str(band) for band in repeated[:5]) + (", ..." if len(repeated) > 5 else "")
        shown = _shown(bands if value is None else value)
        raise InputError(f"{parameter} '{shown}' lists band{'s' if len(repeated) > 1 else ''} {listed} more than "
                         "once; a repeated band would be counted as two bands: list each band once, e.g. "
                         "'1-50, 51-100' instead of '1-50, 50-100'.")


def _shown(value):
    return ", ".join(str(item) for item in value) if isinstance(value, (list, tuple)) else str(value)


def _parse_token(token, value, parameter):
    if not token:
        return []
    if _is_number(token):
        return [int(token)]
    first, separator, last = token.partition("-")
    if separator and _is_number(first.strip()) and _is_number(last.strip()):
        first, last = int(first), int(last)
        if last < first:
            raise InputError(f"{parameter}: the range '{token}' ends before it starts: write it from the lower "
                             f"band to the higher, e.g. '{last}-{first}'.")
        return list(range(first, last + 1))
    raise _not_a_band(token, value, parameter)


def _is_number(text):
    return text.lstrip("+").isdigit() or (text.startswith("-") and text[1:].isdigit())


def _not_a_band(token, value, parameter):
    return InputError(f"{parameter} '{_shown(value)}': '{token}' is not a band number or a range of band numbers; give "
                      f"1-based band numbers and ranges separated by commas, such as {EXAMPLE}.")
