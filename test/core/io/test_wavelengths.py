"""Band wavelengths as RasterReader reads them: GDAL band metadata (default and IMAGERY domains) and ENVI headers."""

import numpy as np
import pytest
from osgeo import gdal

from fers.fers_core.io.reader import RasterReader

from ...rasters import write_cube


def cube_with(tmp_path, items, domain=""):
    """A 3-band cube whose band i carries the metadata items `items[i]` (a dict) in `domain`."""
    path = write_cube(tmp_path / "w.tif", np.random.default_rng(0).normal(size=(3, 4, 5)).astype(np.float32))
    dataset = gdal.Open(path, gdal.GA_Update)
    for number, metadata in enumerate(items, start=1):
        for key, value in metadata.items():
            dataset.GetRasterBand(number).SetMetadataItem(key, value, domain)
    dataset = None
    return path


@pytest.mark.parametrize("items, expected", [
    ([{"wavelength": "450", "wavelength_units": "nm"}, {"wavelength": "550", "wavelength_units": "nm"},
      {"wavelength": "650", "wavelength_units": "Nanometers"}], [450.0, 550.0, 650.0]),
    ([{"wavelength": "0.45", "wavelength_units": "Micrometers"}, {"wavelength": "0.55", "wavelength_units": "um"},
      {"wavelength": "0.65"}], [450.0, 550.0, 650.0]),
    ([{"CENTRAL_WAVELENGTH_UM": "0.45"}, {"CENTRAL_WAVELENGTH_UM": "0.55"}, {"CENTRAL_WAVELENGTH_UM": "0.65"}],
     [450.0, 550.0, 650.0]),
    ([{"wavelength": "450"}, {}, {"wavelength": "650"}], None),  # one band without: none used
    ([{"wavelength": "450"}, {"wavelength": "n/a"}, {"wavelength": "650"}], None),
])
def test_band_metadata(tmp_path, items, expected):
    with RasterReader(cube_with(tmp_path, items)) as reader:
        assert reader.wavelengths_nm == (pytest.approx(expected) if expected else None)


def test_the_imagery_domain_of_newer_gdal(tmp_path):
    items = [{"CENTRAL_WAVELENGTH_UM": f"{value}", "FWHM_UM": "0.01"} for value in (0.45, 0.55, 0.65)]
    path = cube_with(tmp_path, items, "IMAGERY")
    with RasterReader(path) as reader:
        assert reader.wavelengths_nm == pytest.approx([450.0, 550.0, 650.0])
    with RasterReader(path, [3, 1]) as reader:  # used in the file's order, whatever the list's
        assert reader.bands == [1, 3] and reader.listed_out_of_order
        assert reader.wavelengths_nm == pytest.approx([450.0, 650.0])


def test_an_envi_header_list_follows_the_band_selection(tmp_path):
    path = tmp_path / "c.img"
    dataset = gdal.GetDriverByName("ENVI").Create(str(path), 5, 4, 4, gdal.GDT_Float32)
    for number in range(1, 5):
        dataset.GetRasterBand(number).WriteArray(np.full((4, 5), number, np.float32))
    dataset = None
    header = tmp_path / "c.hdr"
    header.write_text(header.read_text() + "wavelength units = Micrometers\nwavelength = {0.4, 0.5, 0.6, 0.7}\n")
    with RasterReader(path, [2, 4]) as reader:
        assert reader.wavelengths_nm == pytest.approx([500.0, 700.0])


def envi_cube(tmp_path, header_lines, bands=4):
    """An ENVI cube of `bands` bands whose header gets `header_lines` appended (GDAL's header, then ours)."""
    path = tmp_path / "cube.img"
    dataset = gdal.GetDriverByName("ENVI").Create(str(path), 5, 4, bands, gdal.GDT_Float32)
    dataset.GetRasterBand(1).Fill(1)
    dataset = None
    with open(tmp_path / "cube.hdr", "a") as header:
        header.write("".join(line + "\n" for line in header_lines))
    return str(path)


@pytest.mark.parametrize("lines, expected, problem", [
    (["wavelength units = Index", "wavelength = {1, 2, 3, 4}"], None, "units are 'Index', not a length"),
    (["wavelength units = Unknown", "wavelength = {1, 2, 3, 4}"], None, "units are 'Unknown'"),
    (["wavelength units = \u03bcm", "wavelength = {0.4, 0.5, 0.6, 0.7}"], [400, 500, 600, 700], ""),
    (["wavelength units = Millimeters", "wavelength = {0.0004, 0.0005, 0.0006, 0.0007}"], [400, 500, 600, 700], ""),
    (["wavelength = {25, 29, 31, 35}"], [25, 29, 31, 35], ""),  # one rule for the list, not value by value
    (["wavelength = {0.4, 0.5, 0.6, 0.7}"], [400, 500, 600, 700], ""),
    (["wavelength units = Nanometers", "wavelength = {400, 500, 600}"], None, "lists 3 wavelengths for 4"),
])
def test_envi_wavelength_units_and_lists(tmp_path, lines, expected, problem):
    with RasterReader(envi_cube(tmp_path, lines)) as reader:
        assert reader.wavelengths_nm == (pytest.approx(expected) if expected else None)
        assert problem in reader.wavelength_problem and bool(reader.wavelength_problem) == bool(problem)
