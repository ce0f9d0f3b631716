"""Bands marked bad in the metadata (ENVI bbl) and bands without any valid value: io.reader and io.bad_bands."""

import numpy as np
import pytest
from osgeo import gdal

from fers.fers_core.detectors.global_rx import run_global_rx
from fers.fers_core.errors import InputError, NoValidPixels
from fers.fers_core.io.bad_bands import (
    band_parameter,
    band_ranges,
    bands_without_data,
    explain_no_valid_pixels,
    report_band_selection,
)
from fers.fers_core.io.reader import RasterReader

from ...rasters import write_cube
from .. import Log


def cube(bands=8, rows=12, cols=14, seed=0):
    return np.random.default_rng(seed).normal(100, 5, (bands, rows, cols)).astype(np.float32)


def mark_bad(path, bands, domain=""):
    dataset = gdal.Open(str(path), gdal.GA_Update)
    for number in range(1, dataset.RasterCount + 1):
        dataset.GetRasterBand(number).SetMetadataItem("bbl", "0" if number in bands else "1", domain)
    dataset = None


@pytest.mark.parametrize("domain", ["", "ENVI"])
def test_a_default_selection_leaves_out_the_bands_marked_bad(tmp_path, domain):
    path = write_cube(tmp_path / "c.tif", cube())
    mark_bad(path, {3, 4, 8}, domain)
    with RasterReader(path) as reader:
        assert reader.bands == [1, 2, 5, 6, 7]
        assert reader.skipped_bad_bands == [3, 4, 8] and reader.selected_bad_bands == []


def test_an_explicit_selection_keeps_marked_bands_and_names_them(tmp_path):
    path = write_cube(tmp_path / "c.tif", cube())
    mark_bad(path, {3, 4})
    with RasterReader(path, [1, 2, 3, 5]) as reader:
        assert reader.bands == [1, 2, 3, 5]
        assert reader.selected_bad_bands == [3] and reader.skipped_bad_bands == []


def envi_cube(tmp_path, header_line):
    """A 4-band ENVI cube c.img whose header ends with `header_line`."""
    path = tmp_path / "c.img"
    dataset = gdal.GetDriverByName("ENVI").Create(str(path), 6, 5, 4, gdal.GDT_Float32)
    for number in range(1, 5):
        dataset.GetRasterBand(number).WriteArray(cube(1, 5, 6, seed=number)[0])
    dataset = None
    header = tmp_path / "c.hdr"
    header.write_text(header.read_text() + header_line + "\n")
    return path


def test_the_envi_header_bad_band_list_is_read(tmp_path):
    path = envi_cube(tmp_path, "bbl = {1, 0, 1, 1}")
    with RasterReader(path) as reader:
        assert reader.bands == [1, 3, 4] and reader.skipped_bad_bands == [2]


@pytest.mark.parametrize("values", [["x", "1", "1", "1"], ["1", "1", "1", "1"]])
def test_values_that_mark_nothing(tmp_path, values):
    path = write_cube(tmp_path / "c.tif", cube(4))
    dataset = gdal.Open(path, gdal.GA_Update)
    for number, value in enumerate(values, start=1):
        dataset.GetRasterBand(number).SetMetadataItem("bbl", value)
    dataset = None
    with RasterReader(path) as reader:
        assert reader.bands == [1, 2, 3, 4] and reader.skipped_bad_bands == []


def test_every_band_marked_bad_is_refused_with_what_to_do(tmp_path):
    path = write_cube(tmp_path / "c.tif", cube(3))
    mark_bad(path, {1, 2, 3})
    with pytest.raises(InputError, match=r"Every band of 'c.tif' is marked bad .* list the bands to use in BANDS"):
        RasterReader(path)
    with RasterReader(path, [1, 2]) as reader:
        assert reader.selected_bad_bands == [1, 2]


def test_band_ranges_and_parameter():
    assert band_ranges([12, 3, 5, 6, 7, 8, 9]) == "3, 5-9 and 12"
    assert band_ranges([4]) == "4"
    assert band_parameter([1, 2, 3, 7, 9, 10]) == "1-3, 7, 9-10"


def test_the_report_says_what_was_left_out_or_what_was_chosen(tmp_path):
    path = write_cube(tmp_path / "c.tif", cube())
    mark_bad(path, {2, 3})
    log = Log()
    with RasterReader(path) as reader:
        report_band_selection(reader, log)
    assert log.infos == ["Bands 2-3 are marked bad in the raster's metadata (bbl = 0) and left out: 6 bands "
                              "are used. List bands in BANDS to choose them yourself."]
    assert log.warnings == []
    log = Log()
    with RasterReader(path, [1, 2]) as reader:
        report_band_selection(reader, log, "c.tif")
    assert log.warnings == ["BANDS includes band 2, which c.tif's metadata marks bad (bbl = 0): noisy bands "
                                 "can weaken the results."]
    assert log.infos == []


def with_empty_bands(tmp_path, empty, nodata=None, bands=8):
    data = cube(bands)
    for number in empty:
        data[number - 1] = np.nan if nodata is None else nodata
    return write_cube(tmp_path / "e.tif", data, nodata=nodata)


@pytest.mark.parametrize("nodata", [None, -32768.0])
def test_bands_without_data_are_found_whether_nan_or_nodata(tmp_path, nodata):
    path = with_empty_bands(tmp_path, [2, 6, 7], nodata)
    assert bands_without_data(path, None) == [2, 6, 7]
    assert bands_without_data(path, [1, 6]) == [6]
    assert bands_without_data(path, [1, 3]) == []


def test_a_band_with_a_single_valid_value_is_not_empty(tmp_path):
    data = cube(4)
    data[1] = np.nan
    data[1, 11, 13] = 5.0
    path = write_cube(tmp_path / "one.tif", data)
    assert bands_without_data(path, None) == []


def test_the_no_valid_pixels_error_names_the_empty_bands_and_the_bands_to_give(tmp_path):
    path = with_empty_bands(tmp_path, [2, 6, 7])
    with pytest.raises(InputError, match=r"^Bands 2 and 6-7 of 'e.tif' hold no valid value .* leave them out with "
                                         r"BANDS '1, 3-5, 8'\.$"):
        with explain_no_valid_pixels(path, None):
            raise NoValidPixels("No valid pixels.")
    with pytest.raises(InputError, match=r"^Band 6 of 'e.tif' holds no valid value .* leave it out with BANDS "
                                         r"'4-5'\.$"):
        with explain_no_valid_pixels(path, [4, 5, 6]):
            raise NoValidPixels("No valid pixels.")


def test_when_every_band_is_empty_the_error_stays_about_the_nodata_value(tmp_path):
    path = with_empty_bands(tmp_path, range(1, 5), bands=4)
    with pytest.raises(NoValidPixels, match=r"^Check the nodata value\.$"):
        with explain_no_valid_pixels(path, None):
            raise NoValidPixels("Check the nodata value.")


def test_other_causes_keep_their_own_error(tmp_path):
    data = cube(4)
    data[0, :6] = np.nan  # every band has data, but no pixel is valid in all of them
    data[1, 6:] = np.nan
    path = write_cube(tmp_path / "split.tif", data)
    with pytest.raises(NoValidPixels, match="^original$"):
        with explain_no_valid_pixels(path, None):
            raise NoValidPixels("original")
    with pytest.raises(ValueError):  # errors of other kinds pass unchanged
        with explain_no_valid_pixels(path, None):
            raise ValueError("other")


def test_global_rx_runs_on_a_raster_whose_nan_bands_are_marked_bad(tmp_path):
    path = with_empty_bands(tmp_path, [2, 6])
    mark_bad(path, {2, 6})
    log = Log()
    summary = run_global_rx(path, tmp_path / "rx.tif", feedback=log)
    assert summary.bands == 6 and summary.valid_pixels == 12 * 14
    assert any(message.startswith("Bands 2 and 6 are marked bad") for message in log.infos)
    with pytest.raises(InputError, match=r"^Bands 2 and 6 of 'e.tif' hold no valid value .* BANDS '1, 3-5, 7-8'"):
        run_global_rx(path, tmp_path / "rx2.tif", bands=list(range(1, 9)), feedback=Log())
    assert not (tmp_path / "rx2.tif").exists()


def test_local_rx_with_components_names_the_empty_band(tmp_path):
    from fers.fers_core.detectors.local_rx import run_local_rx

    path = with_empty_bands(tmp_path, [3])
    with pytest.raises(InputError, match=r"^Band 3 of 'e.tif' holds no valid value .* BANDS '1-2, 4-8'\.$"):
        run_local_rx(path, tmp_path / "local.tif", inner=3, outer=7, components=2, feedback=Log())
    assert not (tmp_path / "local.tif").exists()


def test_every_process_of_a_run_reads_the_bands_resolved_once(tmp_path):
    from contextlib import ExitStack

    from fers.fers_core.detectors.global_rx import open_rx_run

    path = with_empty_bands(tmp_path, [2, 6])
    mark_bad(path, {2, 6})
    with ExitStack() as stack:
        _, source, state = open_rx_run(path, None, None, None, Log(), stack)
        assert source.bands == (1, 3, 4, 5, 7, 8) == tuple(state.reader.bands)


def test_training_rasters_keep_their_resolved_bands(tmp_path):
    from fers.fers_core.training.data import TrainingRaster, load_background

    path = with_empty_bands(tmp_path, [2, 6])
    mark_bad(path, {2, 6})
    log = Log()
    cube = load_background(TrainingRaster(path), 5, feedback=log)
    assert cube.bands == (1, 3, 4, 5, 7, 8) and cube.band_count == 6
    assert log.infos[0].startswith("Bands 2 and 6 are marked bad in e.tif's metadata")


def test_the_extra_pass_stops_when_the_run_is_cancelled(tmp_path):
    from fers.fers_core.errors import Cancelled

    class CancelledLog(Log):
        def is_cancelled(self):
            return True

    path = with_empty_bands(tmp_path, [3])
    with pytest.raises(Cancelled):
        with explain_no_valid_pixels(path, None, CancelledLog()):
            raise NoValidPixels("No valid pixels.")


def test_an_envi_bad_band_list_of_the_wrong_length_is_ignored_and_reported(tmp_path):
    path = envi_cube(tmp_path, "bbl = {1, 0, 1}")
    log = Log()
    with RasterReader(path) as reader:
        assert reader.bands == [1, 2, 3, 4] and reader.skipped_bad_bands == []
        report_band_selection(reader, log)
    assert log.warnings == ["The bad-band list (bbl) in the raster's ENVI header has 3 values for 4 bands: it is "
                            "ignored and no band is left out; list the bands to use in BANDS."]


def test_an_envi_bad_band_list_with_values_besides_0_and_1_is_ignored_and_reported(tmp_path):
    path = envi_cube(tmp_path, "bbl = {1, 0, 2, 1}")
    log = Log()
    with RasterReader(path) as reader:
        assert reader.bands == [1, 2, 3, 4]
        report_band_selection(reader, log)
    assert log.warnings == ["The bad-band list (bbl) in the raster's ENVI header holds 2 besides 0 (bad) and 1 "
                            "(good): it is ignored and no band is left out; list the bands to use in BANDS."]
