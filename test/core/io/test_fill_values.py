"""Undeclared fill values: the reader's fill magnitude and io.fill_values' bounded sample and warnings."""

import numpy as np
import pytest
from osgeo import gdal

from fers.fers_core.io.bad_bands import report_band_selection
from fers.fers_core.io.fill_values import SAMPLE_PIXELS, FillSurvey, report_fill_values
from fers.fers_core.io.reader import RasterReader
from fers.fers_core.io.windows import Window
from fers.fers_core.training.data import TrainingRaster, load_background

from ...rasters import write_cube
from .. import Log


def cube(bands=6, rows=40, cols=50, seed=0):
    return np.random.default_rng(seed).normal(100, 5, (bands, rows, cols)).astype(np.float32)


def tiled(path, data, tile=128):
    """A tiled, pixel-interleaved GeoTIFF: GDAL blocks of tile x tile pixels."""
    dataset = gdal.GetDriverByName("GTiff").Create(str(path), data.shape[2], data.shape[1], data.shape[0],
                                                   gdal.GDT_Float32, ["TILED=YES", f"BLOCKXSIZE={tile}",
                                                                      f"BLOCKYSIZE={tile}"])
    for index, plane in enumerate(data):
        dataset.GetRasterBand(index + 1).WriteArray(plane)
    dataset = None
    return str(path)


def test_values_of_fill_magnitude_are_invalid_in_every_read(tmp_path):
    data = cube()
    data[0, 1, 2], data[3, 4, 5], data[1, 6, 7] = 3.4e38, -1e30, 9.5e29  # the last is a value, not fill
    with RasterReader(write_cube(tmp_path / "f.tif", data)) as reader:
        _, valid = reader.read(Window.whole(reader.height, reader.width))
        assert not valid[1, 2] and not valid[4, 5] and valid[6, 7]
        assert valid.sum() == valid.size - 2
        huge = np.full_like(data, 3.4e38)
    with RasterReader(write_cube(tmp_path / "all.tif", np.concatenate([data, huge[:1]]))) as reader:
        assert list(reader.band_validity(Window.whole(reader.height, reader.width))) == [True] * 6 + [False]


def test_the_sample_is_a_few_blocks_and_reaches_the_corners(tmp_path):
    data = cube(rows=768, cols=896)
    data[:, -128:, -128:] = 0  # fill in the bottom-right corner block only
    path = tiled(tmp_path / "tiled.tif", data)
    with RasterReader(path) as reader:
        survey = FillSurvey(reader)
        assert reader.block_shape == (128, 128)
        assert survey.sampled == 9 * SAMPLE_PIXELS  # nine of the 42 blocks, each read at 32 x 128 pixels
        assert survey.flat_fill() == (0, SAMPLE_PIXELS)


def test_the_warning_says_what_the_raster_declares(tmp_path):
    data = cube()
    data[:, :, :5] = 0
    data[:, 0, 10] = -9999
    log = Log()
    with RasterReader(write_cube(tmp_path / "nd.tif", data, nodata=-9999)) as reader:
        report_fill_values(reader, log)
    assert len(log.warnings) == 1
    assert "sampled pixels of 'nd.tif' (10%) hold 0 in every band, and the raster declares nodata -9999: if 0 " \
        "marks missing data, run again with the input nodata value 0 (INPUT_NODATA;" in log.warnings[0]


def test_two_bands_or_a_few_flat_pixels_are_no_sign_of_fill(tmp_path):
    data = cube(bands=2)
    data[:, :, :5] = 0
    few = cube()
    few[:, 3:5, 3:5] = 7  # 4 of 2000 pixels
    log = Log()
    for name, values in (("two.tif", data), ("few.tif", few)):
        with RasterReader(write_cube(tmp_path / name, values)) as reader:
            report_fill_values(reader, log)
    assert log.warnings == []


def test_extra_nodata_values_are_nodata_and_silence_the_warning(tmp_path):
    data = cube()
    data[:, :, :5] = 0
    data[2, 7, 9] = -1  # one band at the second value: the pixel is nodata, as with the raster's own nodata
    path = write_cube(tmp_path / "x.tif", data.astype(np.int16))
    log = Log()
    with RasterReader(path, nodata=(0, -1.0, 0.5)) as reader:  # 0.5 cannot be an int16 value: ignored
        _, valid = reader.read(Window.whole(reader.height, reader.width))
        report_fill_values(reader, log)
    expected = ~(np.all(data == 0, axis=0))
    expected[7, 9] = False
    np.testing.assert_array_equal(valid, expected)
    assert log.warnings == ["The input nodata value 0.5 cannot occur in 'x.tif', whose values are int16: it leaves no "
                            "pixel out; give a value the raster can hold."]  # and no fill warning: 0 is declared


def test_training_names_the_raster_with_the_fill(tmp_path):
    data = cube(bands=8, rows=48, cols=48)
    data[:, :6, :] = -9999
    log = Log()
    load_background(TrainingRaster(write_cube(tmp_path / "bg.tif", data)), 8, feedback=log)
    assert len(log.warnings) == 1
    assert "sampled pixels of 'bg.tif' (" in log.warnings[0] and "hold -9999 in every band" in log.warnings[0]


def test_a_declared_huge_nodata_raises_no_warning(tmp_path):
    data = cube()
    data[:, :, :5] = np.finfo(np.float32).min  # the usual float nodata, declared
    log = Log()
    with RasterReader(write_cube(tmp_path / "d.tif", data, nodata=float(np.finfo(np.float32).min))) as reader:
        report_fill_values(reader, log)
    assert log.warnings == []


def test_scaled_rasters_are_surveyed_in_their_stored_values(tmp_path):
    data = np.round(cube() * 10).astype(np.int16)
    data[:, :, :5] = -9999
    path = write_cube(tmp_path / "scaled.tif", data, scale=1e-4)
    dataset = gdal.Open(path, gdal.GA_Update)
    dataset.GetRasterBand(2).SetScale(2e-4)  # another scale per band: flat only in the stored values
    dataset = None
    log = Log()
    with RasterReader(path) as reader:
        report_fill_values(reader, log)
    assert len(log.warnings) == 1 and "hold -9999 in every band" in log.warnings[0]
    assert "run again with the input nodata value -9999 (" in log.warnings[0]
    with RasterReader(path, nodata=-9999) as reader:  # what the warning says: the collar is left out
        _, valid = reader.read(Window.whole(reader.height, reader.width))
    np.testing.assert_array_equal(valid, data[0] != -9999)


def test_with_an_input_nodata_value_set_the_warning_points_to_the_file(tmp_path):
    data = cube()
    data[:, :, :5] = 0
    data[:, -1, :] = -9999
    log = Log()
    with RasterReader(write_cube(tmp_path / "two.tif", data), nodata=-9999) as reader:
        report_fill_values(reader, log)
    assert len(log.warnings) == 1
    assert "hold 0 in every band, and the raster declares no nodata value; the input nodata value (INPUT_NODATA) " \
        "is -9999: if 0 marks missing data, declare it in the file (gdal_translate -a_nodata 0 input output), as " \
        "INPUT_NODATA holds one value." in log.warnings[0]


def test_nodata_values_takes_one_number_or_several():
    from fers.fers_core.errors import InputError
    from fers.fers_core.io.reader import nodata_values

    assert nodata_values(None) == () and nodata_values([]) == ()
    assert nodata_values(0) == (0.0,) and nodata_values(-9999) == (-9999.0,)
    assert nodata_values([0, -9999, 0, float("nan")]) == (0.0, -9999.0)
    with pytest.raises(InputError, match="numbers, not the text"):
        nodata_values("12")


def test_an_alpha_band_is_left_out_and_masks_the_transparent_pixels(tmp_path):
    """gdalwarp -dstalpha adds an alpha band: GDAL uses it as the mask only for 2 or 4 bands."""
    source = write_cube(tmp_path / "swath.tif", cube(bands=16, rows=30, cols=30))
    warped = gdal.Warp(str(tmp_path / "warped.tif"), source, dstAlpha=True, dstSRS="EPSG:32633")
    assert warped.RasterCount == 17 and warped.GetRasterBand(17).GetColorInterpretation() == gdal.GCI_AlphaBand
    alpha = warped.GetRasterBand(17).ReadAsArray()
    warped = None
    assert (alpha == 0).any() and (alpha > 0).any()
    log = Log()
    with RasterReader(str(tmp_path / "warped.tif")) as reader:
        assert reader.bands == list(range(1, 17)) and reader.alpha_band == 17
        _, valid = reader.read(Window.whole(reader.height, reader.width))
        assert np.array_equal(valid, alpha > 0)
        report_fill_values(reader, log)
        report_band_selection(reader, log)
    assert not log.warnings  # the transparent collar is declared: no undeclared-fill warning
    assert any("Band 17 is the raster's alpha (transparency) band: it is left out" in line for line in log.infos)
    with RasterReader(str(tmp_path / "warped.tif"), bands=list(range(1, 18))) as chosen:
        assert chosen.bands[-1] == 17
        assert np.array_equal(chosen.read(Window.whole(chosen.height, chosen.width))[1], alpha > 0)


def test_an_input_nodata_value_held_in_only_some_bands_of_many_pixels_is_named(tmp_path):
    """A collar of 0 in every band, and interior pixels where one band measures 0: INPUT_NODATA=0 leaves both out
    (any band), which the analyst should hear about; the collar alone raises nothing."""
    data = np.round(cube()).astype(np.int16)
    data[:, :, :5] = 0  # the collar
    collar_only = write_cube(tmp_path / "collar.tif", data)
    data[3, 10:30, 20:40] = 0  # 400 interior pixels measure 0 in band 4
    both = write_cube(tmp_path / "both.tif", data)
    for path, expected in ((collar_only, []), (both, ["hold the input nodata value 0 in some bands but not in all"])):
        log = Log()
        with RasterReader(path, nodata=(0,)) as reader:
            report_fill_values(reader, log)
        assert [phrase for phrase in expected if any(phrase in warning for warning in log.warnings)] == expected
        assert len(log.warnings) == len(expected), log.warnings
