"""One raster reader, one interpretation: data types, grids, containers and output formats.

- Signed 8-bit rasters (GDAL 3.6: Byte + PIXELTYPE=SIGNEDBYTE; GDAL 3.7+: Int8) are int8 in every read:
  the reuse buffer of global RX used to take GDAL's Byte type, so their negative values and nodata (-128)
  were read as 128..255 and scored.
- Complex rasters are refused (they used to be silently reduced to their real part).
- A mask (or ground truth, score raster) of the same size and CRS on another grid is refused.
- Output names write the format their extension names, or are refused (a .vrt or .asc used to be a GeoTIFF).
"""

import re

import numpy as np
import pytest
from osgeo import gdal

from fers.fers_core.detectors.evaluation import evaluate
from fers.fers_core.detectors.global_rx import run_global_rx
from fers.fers_core.detectors.local_rx import run_local_rx
from fers.fers_core.enhance.checkpoints import import_authors_checkpoint
from fers.fers_core.errors import InputError, ModelFileError, OutputError
from fers.fers_core.io.band_list import parse_band_list
from fers.fers_core.io.grid import check_same_grid, read_mask
from fers.fers_core.io.output_formats import RASTER_OUTPUT_FORMATS, raster_output_format
from fers.fers_core.io.reader import RasterReader, is_raster_source
from fers.fers_core.io.windows import Window
from fers.fers_core.io.writer import RasterWriter
from fers.fers_core.pipeline.postprocess import score_percentiles

from ...rasters import GEOTRANSFORM, read, utm_wkt, write_cube

ROWS, COLS, BANDS = 24, 30, 4


def signed_cube(seed=0):
    """(bands, rows, cols) int8 values spanning -127..127, with nodata (-128) pixels in every band's first row."""
    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((BANDS, BANDS)) + 2 * np.eye(BANDS)
    data = (rng.standard_normal((ROWS * COLS, BANDS)) @ mixing).T.reshape(BANDS, ROWS, COLS)
    cube = np.clip(np.round(data / np.abs(data).max() * 120), -127, 127).astype(np.int8)
    cube[:, 0, :8] = -128
    return cube


def write_signed(path, cube, nodata=-128, geotransform=GEOTRANSFORM):
    """A GeoTIFF of Byte bands with PIXELTYPE=SIGNEDBYTE, as GDAL 3.6 writes signed bytes."""
    options = ["PIXELTYPE=SIGNEDBYTE", "PHOTOMETRIC=MINISBLACK"]  # not RGBA: GDAL's default for 4 Byte bands
    dataset = gdal.GetDriverByName("GTiff").Create(str(path), cube.shape[2], cube.shape[1], cube.shape[0],
                                                   gdal.GDT_Byte, options=options)
    dataset.SetGeoTransform(geotransform)
    dataset.SetProjection(utm_wkt())
    for index in range(cube.shape[0]):
        band = dataset.GetRasterBand(index + 1)
        band.SetNoDataValue(nodata)
        band.WriteArray(cube[index].view(np.uint8))
    dataset = None
    return str(path)


@pytest.fixture
def signed(tmp_path):
    cube = signed_cube()
    return cube, write_signed(tmp_path / "signed.tif", cube)


# ---------------------------------------------------------------------------------------------
# Signed bytes


def test_the_fixture_is_what_gdal_calls_a_signed_byte_raster(signed):
    _, path = signed
    dataset = gdal.Open(path)
    band = dataset.GetRasterBand(1)
    assert band.DataType == gdal.GDT_Byte and band.GetMetadataItem("PIXELTYPE", "IMAGE_STRUCTURE") == "SIGNEDBYTE"
    assert band.GetNoDataValue() == -128


@pytest.mark.parametrize("options", [dict(dtype=None, reuse=True), dict(dtype=None), dict(), dict(dtype=np.float32)])
def test_every_read_gives_the_signed_values(signed, options):
    cube, path = signed
    with RasterReader(path) as reader:
        assert reader.stored_dtype == np.int8
        window = Window(0, 0, ROWS, COLS)
        for _ in range(2):  # the second read reuses the buffer
            data, valid = reader.read(window, **options)
            np.testing.assert_array_equal(data, cube.astype(data.dtype))
            np.testing.assert_array_equal(valid, (cube != -128).all(axis=0))


def test_global_and_local_rx_score_signed_bytes_as_their_values(signed, tmp_path):
    """Same scores as the same values stored as Int16 (the old global RX scored 1,910 of 1,920 pixels wrong)."""
    cube, path = signed
    as_int16 = write_cube(tmp_path / "int16.tif", cube.astype(np.int16), nodata=-128)
    for name, run in (("global", run_global_rx), ("local", lambda i, o: run_local_rx(i, o, inner=3, outer=9))):
        run(path, tmp_path / f"{name}-signed.tif")
        run(as_int16, tmp_path / f"{name}-int16.tif")
        signed_scores, nodata, _, _ = read(tmp_path / f"{name}-signed.tif")
        int16_scores, _, _, _ = read(tmp_path / f"{name}-int16.tif")
        np.testing.assert_array_equal(signed_scores, int16_scores)
        assert (signed_scores[0, :8] == nodata).all() and (signed_scores[1:] != nodata).all()


def test_the_mask_and_the_score_sample_read_signed_bytes(signed, tmp_path):
    cube, path = signed
    mask_values = np.where(cube[0] < 0, -5, 0).astype(np.int8)  # negative = excluded: non-zero either way
    mask_path = write_signed(tmp_path / "mask.tif", mask_values[None], nodata=-128)
    with RasterReader(path) as reader, read_mask(mask_path, reader) as mask:
        data, _ = mask.read(Window(0, 0, ROWS, COLS), dtype=None, reuse=True)
        np.testing.assert_array_equal(data[0], mask_values)
    percentiles = score_percentiles(path, [0, 100])  # band 1, nodata left out
    valid = cube[0][cube[0] != -128]
    assert percentiles == [float(valid.min()), float(valid.max())]


def mixed_vrt(path, sources):
    """A VRT of (file, band, data type, signed) bands: GDAL's own reads then disagree band by band."""
    bands = []
    for index, (source, band, data_type, signed_bytes) in enumerate(sources, start=1):
        metadata = ('<Metadata domain="IMAGE_STRUCTURE"><MDI key="PIXELTYPE">SIGNEDBYTE</MDI></Metadata>'
                    if signed_bytes else "")
        bands.append(f'<VRTRasterBand dataType="{data_type}" band="{index}">{metadata}<SimpleSource>'
                     f'<SourceFilename relativeToVRT="0">{source}</SourceFilename><SourceBand>{band}</SourceBand>'
                     '</SimpleSource></VRTRasterBand>')
    path.write_text(f'<VRTDataset rasterXSize="{COLS}" rasterYSize="{ROWS}">{"".join(bands)}</VRTDataset>')
    return str(path)


def test_mixed_types_and_a_selection_without_band_1_keep_each_band_s_values(signed, tmp_path):
    """ReadAsArray takes the signed-byte rule from band 1 of the file and mixed types as float32."""
    cube, path = signed
    counts = (np.arange(ROWS * COLS).reshape(ROWS, COLS) % 300).astype(np.uint16)
    unsigned_path = write_cube(tmp_path / "uint16.tif", counts)
    raw_bytes = write_cube(tmp_path / "bytes.tif", cube[1].view(np.uint8))
    vrt = mixed_vrt(tmp_path / "mixed.vrt", [(raw_bytes, 1, "Byte", False), (path, 2, "Byte", True),
                                             (unsigned_path, 1, "UInt16", False)])
    window = Window(0, 0, ROWS, COLS)
    with RasterReader(vrt) as reader:
        data, _ = reader.read(window, dtype=None, reuse=True)
        assert reader.stored_dtype == np.int32  # holds int8, uint8 and uint16
        np.testing.assert_array_equal(data[0], cube[1].view(np.uint8))
        np.testing.assert_array_equal(data[1], cube[1])
        np.testing.assert_array_equal(data[2], counts)
    with RasterReader(vrt, bands=[2]) as reader:  # band 1 is unsigned, the selected band is signed
        np.testing.assert_array_equal(reader.read(window, dtype=None)[0][0], cube[1])


# ---------------------------------------------------------------------------------------------
# Complex rasters


@pytest.mark.parametrize("type_name", ["CInt16", "CInt32", "CFloat32", "CFloat64"])
def test_complex_rasters_are_refused_with_what_to_do(tmp_path, type_name):
    path = tmp_path / "complex.tif"
    gdal.GetDriverByName("GTiff").Create(str(path), COLS, ROWS, 3, gdal.GetDataTypeByName(type_name)).FlushCache()
    with pytest.raises(InputError, match=rf"Band 1 of 'complex.tif' holds complex values \({type_name}\).*"
                                         r"magnitude with gdal_calc.py"):
        RasterReader(path)
    with pytest.raises(InputError, match="complex values"):
        run_global_rx(path, tmp_path / "scores.tif")
    assert not (tmp_path / "scores.tif").exists()


# ---------------------------------------------------------------------------------------------
# Grids


def grid_raster(path, geotransform, rows=ROWS, cols=COLS, epsg=32632):
    return write_cube(path, np.zeros((rows, cols), np.uint8), geotransform=geotransform, epsg=epsg)


@pytest.mark.parametrize("geotransform, problem", [
    ((500005.0, 10.0, 0.0, 4100000.0, 0.0, -10.0), r"origin is \+0.5 columns and \+0 rows away"),
    ((500000.0, 10.0, 0.0, 4099970.0, 0.0, -10.0), r"origin is \+0 columns and \+3 rows away"),
    ((500000.0, 20.0, 0.0, 4100000.0, 0.0, -20.0), r"pixels are 20 x 20 against 10 x 10"),
    ((500000.0, 10.0, 0.5, 4100000.0, 0.5, -10.0), r"rotated differently"),
])
def test_a_mask_on_another_grid_is_refused_with_what_differs(tmp_path, geotransform, problem):
    source = grid_raster(tmp_path / "input.tif", GEOTRANSFORM)
    mask = grid_raster(tmp_path / "mask.tif", geotransform)
    with RasterReader(source) as reader, pytest.raises(InputError) as refused:
        read_mask(mask, reader)
    message = str(refused.value)
    assert "The mask has the input's size but not its grid" in message
    assert re.search(problem, message), message
    assert "gdalwarp -r near -te 500000 4099760 500300 4100000 -ts 30 24" in message and "Align rasters" in message


def test_grids_within_a_small_fraction_of_a_pixel_and_ungeoreferenced_rasters_are_accepted(tmp_path):
    source = grid_raster(tmp_path / "input.tif", GEOTRANSFORM)
    nearly = (500000.0 + 1e-4, 10.0 + 1e-9, 0.0, 4100000.0, 0.0, -10.0)
    plain = [tmp_path / name for name in ("plain-a.tif", "plain-b.tif")]
    for path in plain:
        gdal.GetDriverByName("GTiff").Create(str(path), COLS, ROWS, 1, gdal.GDT_Byte)
    with RasterReader(source) as reader:
        read_mask(grid_raster(tmp_path / "nearly.tif", nearly), reader).close()
        read_mask(plain[0], reader).close()  # no grid of its own: taken as on the input's
    with RasterReader(plain[0]) as reader:
        read_mask(plain[1], reader).close()
        read_mask(source, reader).close()


def test_evaluation_refuses_a_mask_or_scores_on_another_grid(tmp_path):
    truth_values = np.zeros((ROWS, COLS), np.uint8)
    truth_values[5:8, 5:8] = 1
    truth = write_cube(tmp_path / "truth.tif", truth_values)
    scores = write_cube(tmp_path / "scores.tif", np.random.default_rng(0).random((ROWS, COLS)).astype(np.float32))
    shifted = (GEOTRANSFORM[0] + 20.0,) + GEOTRANSFORM[1:]
    mask = grid_raster(tmp_path / "mask.tif", shifted)
    with pytest.raises(InputError, match="The mask 'mask.tif' has the ground truth's size but not its grid: its "
                                         r"origin is \+2 columns"):
        evaluate([scores], truth, mask_path=mask)
    moved = write_cube(tmp_path / "moved.tif", np.ones((ROWS, COLS), np.float32), geotransform=shifted)
    with pytest.raises(InputError, match="The score raster 'moved.tif' has the ground truth's size but not its grid"):
        evaluate([scores, moved], truth)


def test_check_same_grid_names_both_rasters(tmp_path):
    a = grid_raster(tmp_path / "a.tif", GEOTRANSFORM)
    b = grid_raster(tmp_path / "b.tif", GEOTRANSFORM, cols=COLS - 1)
    with RasterReader(a) as first, RasterReader(b) as second:
        with pytest.raises(InputError, match="The score raster is 29x24 pixels but the ground truth is 30x24"):
            check_same_grid(second, first, "score raster", "ground truth")


# ---------------------------------------------------------------------------------------------
# Containers, band lists, checkpoint folders


def two_variable_netcdf(path):
    source = gdal.GetDriverByName("MEM").Create("", COLS, ROWS, 2, gdal.GDT_Float32)
    source.SetGeoTransform(GEOTRANSFORM)
    source.WriteRaster(0, 0, COLS, ROWS, np.random.default_rng(2).random((2, ROWS, COLS), np.float32).tobytes())
    gdal.GetDriverByName("netCDF").CreateCopy(str(path), source)
    return str(path)


def test_a_netcdf_of_subdatasets_names_them_and_one_can_be_used(tmp_path):
    path = two_variable_netcdf(tmp_path / "scene.nc")
    with pytest.raises(InputError) as refused:
        RasterReader(path)
    message = str(refused.value)
    assert "'scene.nc' has no bands of its own but 2 subdatasets" in message
    first = f'NETCDF:"{path}":Band1'
    assert first in message and f'NETCDF:"{path}":Band2' in message and f"INPUT='{first}'" in message
    assert is_raster_source(first) and not is_raster_source(f'NETCDF:"{path}":Band9')
    with RasterReader(first) as reader:
        assert reader.band_count == 1


@pytest.mark.parametrize("value, expected", [
    ("1-3, 5", [1, 2, 3, 5]), ("2;4", [2, 4]), ([1, 2], [1, 2]), (["1", "3-4"], [1, 3, 4]), ("", None),
    (None, None), ([], None), ("0", [0]),  # range checks against the raster are the reader's
])
def test_band_lists_are_parsed_item_by_item(value, expected):
    assert parse_band_list(value) == expected


@pytest.mark.parametrize("value, token", [("1,2,x", "x"), ("1-x", "1-x"), ("1.5", "1.5"), (["1", "two"], "two")])
def test_a_band_list_item_that_is_not_a_number_is_named(value, token):
    with pytest.raises(InputError, match=rf"BANDS .*: '{token}' is not a band number .* such as '1-100, 120"):
        parse_band_list(value)


@pytest.mark.parametrize("value", [",,", " ; ", [","]])
def test_separators_without_a_band_are_refused_not_read_as_every_band(value):
    with pytest.raises(InputError, match=r"lists no band: give band numbers or ranges such as '1-50, 60', or leave it "
                                         "empty to use every band"):
        parse_band_list(value)


def test_a_reversed_range_says_how_to_write_it():
    with pytest.raises(InputError, match="'9-3' ends before it starts.*'3-9'"):
        parse_band_list("9-3")


@pytest.mark.parametrize("value, listed", [("1-50, 50-100", "band 50"), ([3, 1, 3, 1], "bands 1, 3"),
                                           ("1-10, 1-10", "bands 1, 2, 3, 4, 5, ...")])
def test_a_band_listed_twice_is_refused(value, listed):
    with pytest.raises(InputError, match=rf"^BANDS '.*' lists {re.escape(listed)} more than once; .*: list each band "
                                         "once, e.g. '1-50, 51-100'"):
        parse_band_list(value)


def test_a_checkpoint_file_instead_of_its_folder_is_explained(tmp_path):
    (tmp_path / "convh.pt").write_bytes(b"x")
    with pytest.raises(ModelFileError, match=rf"convh.pt is a file, not a checkpoint folder: .*enc.pt and pc.pt.*"
                                             rf"here probably {tmp_path}"):
        import_authors_checkpoint(tmp_path / "convh.pt")
    (tmp_path / "model.pt").write_bytes(b"x")
    with pytest.raises(ModelFileError, match="needs no import: give it to the FERS anomaly detector's MODEL"):
        import_authors_checkpoint(tmp_path / "model.pt")


# ---------------------------------------------------------------------------------------------
# Output formats


@pytest.mark.parametrize("extension", sorted(RASTER_OUTPUT_FORMATS))
def test_each_supported_extension_writes_its_own_format(tmp_path, extension):
    source = write_cube(tmp_path / "input.tif", np.random.default_rng(1).random((3, ROWS, COLS)).astype(np.float32))
    output = tmp_path / f"scores{extension}"
    run_global_rx(source, output)
    dataset = gdal.Open(str(output))
    assert dataset.GetDriver().ShortName == RASTER_OUTPUT_FORMATS[extension][0]
    reference = tmp_path / "reference.tif"
    run_global_rx(source, reference)
    np.testing.assert_array_equal(dataset.ReadAsArray(), gdal.Open(str(reference)).ReadAsArray())


@pytest.mark.parametrize("name, match", [
    ("scores.vrt", r"VRT \(.vrt\) only describes other rasters .*\(gdalbuildvrt"),
    ("scores.asc", r"Arc/Info ASCII Grid \(one band only\) \(.asc\) files can only be copied whole .*"
                   "gdal_translate -of AAIGrid"),
    ("scores.png", "gdal_translate -of PNG"),
    ("scores.foo", r"'.foo' names no raster format FERS writes: use one of '.tif'"),
    ("scores", "has no extension"),
])
def test_other_output_names_are_refused_before_any_pass(tmp_path, name, match):
    source = write_cube(tmp_path / "input.tif", np.zeros((3, ROWS, COLS), np.float32))
    with pytest.raises(OutputError, match=match):
        run_global_rx(source, tmp_path / name)
    with pytest.raises(OutputError, match=match):
        run_local_rx(source, tmp_path / name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["input.tif"]


def test_netcdf_is_for_one_band_outputs_only(tmp_path):
    assert raster_output_format(tmp_path / "a.nc", 1)[0] == "netCDF"
    with pytest.raises(OutputError, match="has 16 bands, but GDAL writes each band of a netCDF as its own variable"):
        raster_output_format(tmp_path / "cube.nc", 16, "the spectral cube output")
    with pytest.raises(OutputError):
        RasterWriter(tmp_path / "cube.nc", COLS, ROWS, bands=3)
    assert list(tmp_path.iterdir()) == []
