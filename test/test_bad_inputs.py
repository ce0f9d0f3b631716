"""Bad inputs through fers:rx and fers:detect: each gets its specific one-sentence error, and no
output (nor a partial temporary file) is left behind; inputs that are odd but usable give valid scores.

Decisions checked here (see README "Bad inputs"):
- one or two bands: fers:rx scores them (RX is well defined for any band count); fers:detect refuses
  fewer than 3 selected bands, since 1 or 2 bands interpolated to the model's bands give a flat or
  straight-line "spectrum" the networks never saw;
- a model whose wavelength range is covered less than 80% is refused; a raster with fewer than half
  the model's bands is run with a warning;
- model files are never unpickled: a file that would run code is refused and the code never runs.
"""

import os
import pickle
import re
import subprocess
import urllib.parse
import zipfile
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal
from qgis.core import QgsProcessingException

from .conftest import ROOT, TEST_MODEL_BANDS, CancelAt, Recorder, read_only_folder
from .rasters import leftovers, read, rx_reference, utm_wkt, write_cube, write_polygons

RX, DETECT = "fers:rx", "fers:detect"
BOTH = [RX, DETECT]
MODEL_BANDS = TEST_MODEL_BANDS  # the shared model_file fixture's (conftest)


def cube(bands=8, rows=18, cols=22, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((bands, bands)) + np.eye(bands) * 2
    data = (rng.standard_normal((rows * cols, bands)) @ mixing + 100).T.reshape(bands, rows, cols)
    return data.astype(dtype)


def run(run_alg, algorithm, source, output, model, feedback=None, **extra):
    parameters = {"INPUT": str(source) if isinstance(source, (str, Path)) else source, "OUTPUT": str(output),
                  **extra}  # a path, or a project layer
    if algorithm == DETECT:
        parameters.setdefault("MODEL", model)
    return run_alg(algorithm, parameters, feedback)


def refused(run_alg, algorithm, source, folder, model, match, keep, **extra):
    """Run, expect QgsProcessingException matching `match`, and check folder holds only `keep`."""
    output = extra.pop("OUTPUT", folder / "out" / "scores.tif")
    with pytest.raises(QgsProcessingException, match=match):
        run(run_alg, algorithm, source, output, model, **extra)
    assert leftovers(folder, set(keep) | {"out"}) == []
    assert not (folder / "out").exists() or leftovers(folder / "out", set()) == []


def scores_of(result):
    scores, nodata, _, _ = read(result["OUTPUT"])
    assert nodata == -9999
    return scores


# ---------------------------------------------------------------------------------------------
# Band counts


@pytest.mark.slow
@pytest.mark.parametrize("bands", [1, 2])
def test_rx_scores_one_and_two_band_rasters(run_alg, tmp_path, bands):
    data = cube(bands)
    source = write_cube(tmp_path / "few.tif", data)
    scores = scores_of(run(run_alg, RX, source, tmp_path / "rx.tif", None))
    pixels = data.reshape(bands, -1).T.astype(np.float64)
    centred = pixels - pixels.mean(axis=0)
    inverse = np.linalg.inv(np.atleast_2d(np.cov(pixels, rowvar=False)))
    expected = np.einsum("ij,jk,ik->i", centred, inverse, centred).reshape(scores.shape)
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("bands,selection", [(1, None), (2, None), (6, [2, 5])])
def test_detect_refuses_fewer_than_three_bands(run_alg, tmp_path, model_file, bands, selection):
    source = write_cube(tmp_path / "few.tif", cube(bands))
    extra = {"BANDS": selection} if selection else {}
    refused(run_alg, DETECT, source, tmp_path, model_file, r"at least 3 bands.*fers:rx", {"few.tif"}, **extra)


@pytest.mark.parametrize("algorithm", BOTH)
@pytest.mark.parametrize("content", [b"", b"not a raster\n", b"II*\x00" + b"\x00" * 20])
def test_input_that_is_not_a_raster(run_alg, tmp_path, model_file, algorithm, content):
    (tmp_path / "scene.tif").write_bytes(content)
    refused(run_alg, algorithm, tmp_path / "scene.tif", tmp_path, model_file,
            r"^Cannot open raster '.*scene.tif' with GDAL", {"scene.tif"})


def compressed(path, bands=6, size=120):
    """A deflate-compressed GeoTIFF of random values (its strips are read only when the passes reach them)."""
    data = np.random.default_rng(1).normal(100, 5, (bands, size, size)).astype(np.float32)
    dataset = gdal.GetDriverByName("GTiff").Create(str(path), size, size, bands, gdal.GDT_Float32,
                                                   options=["COMPRESS=DEFLATE"])
    for index in range(bands):
        dataset.GetRasterBand(index + 1).WriteArray(data[index])
    dataset = None
    return str(path)


@pytest.mark.parametrize("algorithm", BOTH + ["fers:train"])
def test_a_truncated_file_is_named_in_one_sentence(run_alg, tmp_path, model_file, algorithm):
    whole = Path(compressed(tmp_path / "whole.tif")).read_bytes()
    (tmp_path / "cut.tif").write_bytes(whole[:len(whole) // 2])  # opens (the header is whole), reading fails
    (tmp_path / "whole.tif").unlink()
    match = r"^Cannot read 'cut.tif' at rows \d+-\d+, columns 1-120: .*TIFFReadEncodedStrip.* damaged or truncated"
    if algorithm == "fers:train":
        with pytest.raises(QgsProcessingException, match=match):
            run_alg(algorithm, {"INPUTS": [str(tmp_path / "cut.tif")], "MODEL_BANDS": 6, "EPOCHS": 1,
                                "PATCH_SIZE": 16, "BATCH_SIZE": 4, "DEVICE": 1,
                                "OUTPUT_MODEL": str(tmp_path / "out" / "m.pt")})
        assert not (tmp_path / "out").exists() or leftovers(tmp_path / "out", set()) == []
    else:
        refused(run_alg, algorithm, tmp_path / "cut.tif", tmp_path, model_file, match, {"cut.tif"})


@pytest.mark.parametrize("role", ["INPUT", "MASK", "INPUTS"])
def test_a_layer_qgis_serves_without_gdal_is_refused_with_how_to_save_it(run_alg, tmp_path, model_file, role):
    from qgis.core import QgsProject, QgsRasterLayer

    source = write_cube(tmp_path / "cube.tif", cube(5))
    formula = urllib.parse.quote('"c@1" * 2')
    on_the_fly = QgsRasterLayer(f"?crs=EPSG:32632&extent=500000,4099820,500220,4100000&width=22&height=18"
                                f"&formula={formula}&c:uri={source}&c:provider=gdal", "doubled", "virtualraster")
    assert on_the_fly.isValid() and on_the_fly.providerType() == "virtualraster"
    QgsProject.instance().addMapLayer(on_the_fly)
    match = (r"^The layer 'doubled' comes from QGIS's 'virtualraster' data provider \(an on-the-fly raster calculator "
             r"layer\), which FERS cannot open .*: save it to a file first \(right-click the layer > Export > Save As")
    try:
        if role == "INPUTS":
            with pytest.raises(QgsProcessingException, match=match):
                run_alg("fers:train", {"INPUTS": [on_the_fly], "MODEL_BANDS": 6, "EPOCHS": 1, "PATCH_SIZE": 16,
                                       "BATCH_SIZE": 4, "OUTPUT_MODEL": str(tmp_path / "out" / "m.pt")})
            assert not (tmp_path / "out").exists()
            return
        for algorithm in BOTH:
            inputs = {"MASK": on_the_fly} if role == "MASK" else {}
            refused(run_alg, algorithm, source if role == "MASK" else on_the_fly, tmp_path, model_file, match,
                    {"cube.tif"}, **inputs)
    finally:
        QgsProject.instance().removeMapLayer(on_the_fly.id())


@pytest.mark.parametrize("algorithm", BOTH)
def test_a_vrt_whose_source_is_gone_is_named_in_one_sentence(run_alg, tmp_path, model_file, algorithm):
    gdal.Translate(str(tmp_path / "scene.vrt"), compressed(tmp_path / "source.tif"), format="VRT")
    (tmp_path / "source.tif").unlink()
    refused(run_alg, algorithm, tmp_path / "scene.vrt", tmp_path, model_file,
            r"^Cannot read 'scene.vrt' at rows .*source.tif: No such file or directory\. The file may be damaged",
            {"scene.vrt"})


# ---------------------------------------------------------------------------------------------
# Invalid pixels


@pytest.mark.parametrize("algorithm", BOTH)
def test_all_nodata(run_alg, tmp_path, model_file, algorithm):
    source = write_cube(tmp_path / "empty.tif", np.full((4, 10, 12), -5, np.int16), nodata=-5)
    refused(run_alg, algorithm, source, tmp_path, model_file, "^No valid pixels", {"empty.tif"})


@pytest.mark.parametrize("algorithm", BOTH)
def test_all_nan_without_nodata_value(run_alg, tmp_path, model_file, algorithm):
    data = np.full((4, 10, 12), np.nan, np.float32)
    data[1, ::2] = np.inf
    source = write_cube(tmp_path / "nan.tif", data)
    refused(run_alg, algorithm, source, tmp_path, model_file, "^No valid pixels", {"nan.tif"})


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", BOTH)
def test_nan_and_infinite_values_become_nodata(run_alg, tmp_path, model_file, algorithm):
    data = cube(5)
    data[0, 2, 3] = np.nan
    data[1, 4, 5] = np.inf
    data[4, 6, 7] = -np.inf
    data[:, 10:12, 10:12] = np.nan
    source = write_cube(tmp_path / "nan.tif", data)
    scores = scores_of(run(run_alg, algorithm, source, tmp_path / "s.tif", model_file))
    invalid = ~np.isfinite(data).all(axis=0)
    assert np.all(scores[invalid] == -9999)
    assert np.isfinite(scores).all() and np.all(scores[~invalid] >= 0)


@pytest.mark.parametrize("algorithm", BOTH)
def test_values_of_fill_magnitude_are_nodata_and_named(run_alg, tmp_path, model_file, algorithm):
    data = cube(5)
    data[:, 0, 3] = np.finfo(np.float32).max  # float32's maximum, a common undeclared fill
    data[2, 9, 9] = -1e30
    feedback = Recorder()
    scores = scores_of(run(run_alg, algorithm, write_cube(tmp_path / "fill.tif", data), tmp_path / "s.tif", model_file,
                           feedback))
    assert [line for line in feedback.warnings if "magnitude" in line] == [
        "2 sampled pixels of 'fill.tif' hold values of magnitude 1e+30 or more (e.g. 3.4028235e+38 in band 1) that "
        "no nodata value declares: such values are fill, not measurements, and are treated as nodata."]  # all sampled
    as_nan = data.copy()
    as_nan[:, 0, 3] = as_nan[2, 9, 9] = np.nan  # the same run with those pixels NaN: the same scores everywhere
    expected = scores_of(run(run_alg, algorithm, write_cube(tmp_path / "nan.tif", as_nan), tmp_path / "n.tif",
                             model_file))
    assert scores[0, 3] == scores[9, 9] == -9999
    np.testing.assert_array_equal(scores, expected)


@pytest.mark.parametrize("algorithm", BOTH)
def test_an_undeclared_fill_collar_is_named_with_the_way_to_declare_it(run_alg, tmp_path, model_file, algorithm):
    data = cube(6, rows=30, cols=40)
    data[:, :, :4] = 0  # a collar of zeros in every band, as around an orthorectified swath
    data[:, -3:, :] = 0
    feedback = Recorder()
    run(run_alg, algorithm, write_cube(tmp_path / "collar.tif", data), tmp_path / "s.tif", model_file, feedback)
    warning = [line for line in feedback.warnings if "in every band" in line]
    assert len(warning) == 1 and re.fullmatch(
        r"\d+ of \d+ sampled pixels of 'collar.tif' \(\d+%\) hold 0 in every band, and the raster declares no "
        r"nodata value: if 0 marks missing data, run again with the input nodata value 0 \(INPUT_NODATA; --nodata on "
        r"the command line\), or declare it in the file \(gdal_translate -a_nodata 0 input output\)\. As it is, these "
        r"pixels are scored as data and weaken the background statistics\.", warning[0])
    declared = str(tmp_path / "declared.tif")
    gdal.Translate(declared, str(tmp_path / "collar.tif"), noData=0)  # what the warning says to do in the file
    feedback = Recorder()
    scores = scores_of(run(run_alg, algorithm, declared, tmp_path / "d.tif", model_file, feedback))
    assert not [line for line in feedback.warnings if "in every band" in line]
    collar = np.all(data == 0, axis=0)
    assert np.all(scores[collar] == -9999) and np.all(scores[~collar] >= 0)


def collar_cube():
    data = cube(6, rows=30, cols=40)
    data[:, :, :4] = 0
    data[:, -3:, :] = 0
    return data


def collar_and_declared_scores(run_alg, tmp_path, algorithm, model_file):
    """The collar raster without a nodata value, and the scores of a copy that declares 0 as nodata."""
    source = write_cube(tmp_path / "collar.tif", collar_cube())
    declared = str(tmp_path / "declared.tif")
    gdal.Translate(declared, source, noData=0)
    return source, scores_of(run(run_alg, algorithm, declared, tmp_path / "d.tif", model_file))


@pytest.mark.parametrize("algorithm", BOTH)
def test_an_alpha_band_from_gdalwarp_is_no_spectral_band_and_its_transparent_pixels_are_nodata(
        run_alg, tmp_path, model_file, algorithm):
    source = write_cube(tmp_path / "swath.tif", cube(TEST_MODEL_BANDS, rows=30, cols=30))
    warped = gdal.Warp(str(tmp_path / "warped.tif"), source, dstAlpha=True, dstSRS="EPSG:32633")
    warped = None  # written when closed
    warped = gdal.Open(str(tmp_path / "warped.tif"))
    alpha = warped.GetRasterBand(TEST_MODEL_BANDS + 1).ReadAsArray()
    warped = None
    feedback = Recorder()
    result = run(run_alg, algorithm, str(tmp_path / "warped.tif"), tmp_path / "s.tif", model_file, feedback)
    scores = scores_of(result)
    assert np.array_equal(scores == -9999, alpha == 0)
    assert gdal.Open(result["OUTPUT"]).GetMetadataItem("fers_bands") in (None, ",".join(map(str, range(1, 17))))
    assert any("alpha (transparency) band: it is left out" in line for line in feedback.infos)
    assert not feedback.warnings  # no undeclared-fill warning for the transparent collar


@pytest.mark.parametrize("algorithm", BOTH)
def test_input_nodata_declares_a_fill_value_for_the_run(run_alg, tmp_path, model_file, algorithm):
    source, expected = collar_and_declared_scores(run_alg, tmp_path, algorithm, model_file)
    feedback = Recorder()
    scores = scores_of(run(run_alg, algorithm, source, tmp_path / "s.tif", model_file, feedback, INPUT_NODATA=0))
    np.testing.assert_array_equal(scores, expected)  # as if the file declared it
    assert not [line for line in feedback.warnings if "in every band" in line]
    with_own = write_cube(tmp_path / "own.tif", collar_cube(), nodata=-5)  # besides the raster's own nodata
    np.testing.assert_array_equal(scores_of(run(run_alg, algorithm, with_own, tmp_path / "o.tif", model_file,
                                                INPUT_NODATA=0)), expected)


@pytest.mark.parametrize("algorithm", BOTH)
def test_a_layers_additional_nodata_value_is_honoured(run_alg, tmp_path, model_file, algorithm):
    from qgis.core import QgsProject, QgsRasterLayer, QgsRasterRange

    source, expected = collar_and_declared_scores(run_alg, tmp_path, algorithm, model_file)
    scaled = write_cube(tmp_path / "scaled.tif", collar_cube(), scale=2.0, offset=10.0)  # QGIS shows 0 as 10
    results = {}
    try:
        for name, path, value in (("plain", source, 0), ("scaled", scaled, 10), ("ranged", source, 0)):
            layer = QgsRasterLayer(path, name)
            for band in range(1, layer.bandCount() + 1):  # what Layer Properties > Transparency sets
                layer.dataProvider().setUserNoDataValue(band, [QgsRasterRange(value, value)])
            if name == "ranged":
                layer.dataProvider().setUserNoDataValue(1, [QgsRasterRange(0, 0), QgsRasterRange(1, 5)])
            QgsProject.instance().addMapLayer(layer)  # picked in the dialog's layer combo box
            feedback = Recorder()
            results[name] = (scores_of(run(run_alg, algorithm, layer, tmp_path / f"scores-{name}.tif", model_file,
                                           feedback)), feedback)
    finally:
        QgsProject.instance().removeAllMapLayers()
    np.testing.assert_array_equal(results["plain"][0], expected)
    np.testing.assert_array_equal(results["ranged"][0], expected)
    np.testing.assert_array_equal(results["scaled"][0] == -9999, expected == -9999)  # the collar, as stored 0
    if algorithm == RX:  # RX is affine-invariant: the same scores up to the scale's rounding
        np.testing.assert_allclose(results["scaled"][0], expected, rtol=1e-4)
    assert "Additional nodata from the layer's properties: 0." in results["plain"][1].infos
    assert "Of the layer's additional nodata values (Transparency), the range 1 to 5 (only single values are) " \
        "cannot be honoured: set the input nodata value (in the raster's stored values) instead." \
        in results["ranged"][1].warnings


def test_flat_spectra_of_real_data_raise_no_fill_warning(run_alg, tmp_path, model_file):
    data = cube(6, rows=30, cols=40)
    data[:, 5:7, 5:7] = 100.0  # four flat pixels: under 1% of the sample, no warning
    data[0, :, :4] = 0  # zeros in one band only: not a fill value
    feedback = Recorder()
    run(run_alg, RX, write_cube(tmp_path / "flat.tif", data), tmp_path / "s.tif", None, feedback)
    assert not [line for line in feedback.warnings if "in every band" in line or "magnitude" in line]


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", BOTH)
def test_constant_and_duplicate_bands_are_scored(run_alg, tmp_path, model_file, algorithm):
    data = cube(5).astype(np.float64)
    data = np.concatenate([data, data[:2], np.full((1,) + data.shape[1:], 7.0)])
    source = write_cube(tmp_path / "singular.tif", data)
    feedback = Recorder()
    scores = scores_of(run(run_alg, algorithm, source, tmp_path / "s.tif", model_file, feedback))
    assert np.isfinite(scores).all() and np.all(scores >= 0)
    if algorithm == RX:
        assert any("singular" in line for line in feedback.warnings)
        expected = rx_reference(data[:5].reshape(5, -1).T).reshape(scores.shape)
        np.testing.assert_allclose(scores, expected, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("algorithm", BOTH)
def test_identical_pixels_are_refused(run_alg, tmp_path, model_file, algorithm):
    data = np.broadcast_to(np.arange(1, 7, dtype=np.float32)[:, None, None], (6, 9, 11)).copy()
    source = write_cube(tmp_path / "flat.tif", data)
    refused(run_alg, algorithm, source, tmp_path, model_file, "no variance", {"flat.tif"})


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", BOTH)
def test_constant_raster_is_refused(run_alg, tmp_path, model_file, algorithm):
    source = write_cube(tmp_path / "const.tif", np.full((5, 9, 11), 42, np.uint16))
    refused(run_alg, algorithm, source, tmp_path, model_file, "no variance|input is constant", {"const.tif"})


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", BOTH)
def test_fewer_valid_pixels_than_bands_is_refused_with_how_many_bands_fit(run_alg, tmp_path, model_file, algorithm):
    """6 points span at most 5 dimensions: in 12 bands (16 model bands) every one is equally far from their mean."""
    data = cube(12, rows=10, cols=10).round().astype(np.int16)
    valid = np.zeros((10, 10), bool)
    valid.flat[[3, 17, 42, 55, 71, 98]] = True
    data[:, ~valid] = -1
    source = write_cube(tmp_path / "sparse.tif", data, nodata=-1)
    features = 12 if algorithm == RX else TEST_MODEL_BANDS
    refused(run_alg, algorithm, source, tmp_path, model_file,
            rf"^Only 6 valid background pixels for {features} features \(bands\): with no more pixels than features "
            r"plus one, every pixel gets the same RX score.* Use at most 4 features", {"sparse.tif"})
    few = write_cube(tmp_path / "few.tif", data[:3], nodata=-1)  # 3 bands: scored
    if algorithm == RX:
        scores = scores_of(run(run_alg, algorithm, few, tmp_path / "s.tif", model_file))
        assert np.all(scores[~valid] == -9999) and np.isfinite(scores[valid]).all() and len(set(scores[valid])) > 1


@pytest.mark.parametrize("algorithm", BOTH)
@pytest.mark.parametrize("pixels, message", [(1, "Only 1 valid background pixel: RX needs at least three"),
                                             (2, "Only 2 valid background pixels: RX needs at least three")])
def test_one_or_two_valid_pixels_are_refused(run_alg, tmp_path, model_file, algorithm, pixels, message):
    """Two pixels are no better than one for RX (it advised 'at most 0 features' for two)."""
    data = cube(4, rows=6, cols=6).round().astype(np.int16)
    data[:, 1:, :] = -1
    data[:, 0, pixels:] = -1
    source = write_cube(tmp_path / "few.tif", data, nodata=-1)
    refused(run_alg, algorithm, source, tmp_path, model_file, message, {"few.tif"})


# ---------------------------------------------------------------------------------------------
# Mask and band selection


@pytest.mark.parametrize("algorithm", BOTH)
def test_mask_of_another_size(run_alg, tmp_path, model_file, algorithm):
    source = write_cube(tmp_path / "cube.tif", cube(5))
    mask = write_cube(tmp_path / "mask.tif", np.zeros((18, 21), np.uint8))
    refused(run_alg, algorithm, source, tmp_path, model_file, r"The mask is 21x18 pixels but the input is 22x18",
            {"cube.tif", "mask.tif"}, MASK=mask)


@pytest.mark.parametrize("algorithm", BOTH)
def test_a_mask_of_several_bands_is_refused_with_how_to_extract_one(run_alg, tmp_path, model_file, algorithm):
    """Band 1 was used without a word; which band marks the exclusions is the analyst's to say."""
    source = write_cube(tmp_path / "cube.tif", cube(5))
    mask = write_cube(tmp_path / "mask.tif", np.zeros((2, 18, 22), np.uint8))
    refused(run_alg, algorithm, source, tmp_path, model_file, r"The mask 'mask.tif' has 2 bands, but a mask has one "
            r"\(non-zero = left out of the background\): extract the band you mean, e.g. gdal_translate -b 1",
            {"cube.tif", "mask.tif"}, MASK=mask)


@pytest.mark.parametrize("algorithm", BOTH)
def test_a_mask_that_leaves_out_every_pixel_says_so_and_how_to_invert_it(run_alg, tmp_path, model_file, algorithm):
    data = cube(5)
    data[:, 0, :] = -9999  # the input's own nodata row stays out of the count
    source = write_cube(tmp_path / "cube.tif", data, nodata=-9999)
    inverted = write_cube(tmp_path / "background.tif", np.ones((18, 22), np.uint8))
    refused(run_alg, algorithm, source, tmp_path, model_file,
            r"^The mask 'background.tif' leaves out all 374 valid pixels of 'cube.tif' \(non-zero or nodata = left "
            r"out of the background\), .* invert it \(e.g. Raster calculator: \"background@1\" = 0\)\.$",
            {"cube.tif", "background.tif"}, MASK=inverted)
    blank = write_cube(tmp_path / "blank.tif", np.full((18, 22), 255, np.uint8), nodata=255)
    refused(run_alg, algorithm, source, tmp_path, model_file,
            r"^The mask 'blank.tif' is nodata at all 374 valid pixels of 'cube.tif'.*: give the mask 0 where the "
            "background is", {"cube.tif", "background.tif", "blank.tif"}, MASK=blank)
    nodata_row = np.zeros((18, 22), np.uint8)
    nodata_row[1:] = 1  # only the input's nodata row is background: still no valid background pixel
    partly = write_cube(tmp_path / "partly.tif", nodata_row)
    refused(run_alg, algorithm, source, tmp_path, model_file, "The mask 'partly.tif' leaves out all 374 valid",
            {"cube.tif", "background.tif", "blank.tif", "partly.tif"}, MASK=partly)


@pytest.mark.parametrize("algorithm", BOTH)
def test_a_vector_mask_is_refused_with_the_command_that_rasterises_it(run_alg, tmp_path, model_file, algorithm):
    source = write_cube(tmp_path / "cube.tif", cube(5))  # 22x18 px of 10 m from (500000, 4100000)
    polygons = write_polygons(tmp_path / "targets.gpkg", [[(500050, 4099950), (500090, 4099950), (500090, 4099910),
                                                           (500050, 4099910)]])
    command = ("gdal_rasterize -burn 1 -init 0 -ot Byte -ts 22 18 -te 500000 4099820 500220 4100000 'targets.gpkg' "
               "mask.tif")
    refused(run_alg, algorithm, source, tmp_path, model_file,
            rf"^The mask 'targets.gpkg' is a vector file, but the mask must be a raster on the input's grid: .*"
            rf"{re.escape(command)}, or with QGIS's Rasterize", {"cube.tif", "targets.gpkg"}, MASK=polygons)
    subprocess.run(command.replace("'", "").split(), cwd=tmp_path, check=True, capture_output=True)
    mask = read(tmp_path / "mask.tif")[0]
    assert mask.sum() == 16 and mask[5:9, 5:9].all()  # the 4x4 px polygon, on the input's grid
    assert np.all(scores_of(run(run_alg, algorithm, source, tmp_path / "s.tif", model_file,
                                MASK=str(tmp_path / "mask.tif"))) >= 0)


@pytest.mark.parametrize("algorithm", BOTH)
def test_mask_in_another_crs(run_alg, tmp_path, model_file, algorithm):
    source = write_cube(tmp_path / "cube.tif", cube(5))
    mask = write_cube(tmp_path / "mask.tif", np.zeros((18, 22), np.uint8), epsg=32633)
    refused(run_alg, algorithm, source, tmp_path, model_file, "different CRS", {"cube.tif", "mask.tif"}, MASK=mask)


@pytest.mark.parametrize("algorithm", BOTH)
@pytest.mark.parametrize("bands", [[0], [2, 99], [-1, 2, 3]])
def test_bands_out_of_range(run_alg, tmp_path, model_file, algorithm, bands):
    source = write_cube(tmp_path / "cube.tif", cube(5))
    refused(run_alg, algorithm, source, tmp_path, model_file, r"out of range: 'cube.tif' has bands 1 to 5",
            {"cube.tif"}, BANDS=bands)


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", BOTH)
def test_empty_band_list_means_all_bands(run_alg, tmp_path, model_file, algorithm):
    source = write_cube(tmp_path / "cube.tif", cube(5))
    every = scores_of(run(run_alg, algorithm, source, tmp_path / "a.tif", model_file))
    empty = scores_of(run(run_alg, algorithm, source, tmp_path / "b.tif", model_file, BANDS=[]))
    np.testing.assert_array_equal(every, empty)


# ---------------------------------------------------------------------------------------------
# Bands marked bad in the metadata (ENVI bbl = 0), and bands without any valid value


def with_empty_bands(path, empty, marked, nodata=None):
    """A cube whose `empty` bands are all NaN (or all `nodata`); `marked`: bbl = 0 on them, 1 on the others."""
    data = cube(8)
    for band in empty:
        data[band - 1] = np.nan if nodata is None else nodata
    source = write_cube(path, data, nodata=nodata)
    if marked:
        dataset = gdal.Open(source, gdal.GA_Update)
        for band in range(1, 9):
            dataset.GetRasterBand(band).SetMetadataItem("bbl", "0" if band in empty else "1")
        dataset = None
    return source


@pytest.mark.parametrize("algorithm", BOTH)
def test_bands_marked_bad_are_left_out_unless_listed(run_alg, tmp_path, model_file, algorithm):
    source = with_empty_bands(tmp_path / "marked.tif", [2, 5], marked=True)
    feedback = Recorder()
    default = scores_of(run(run_alg, algorithm, source, tmp_path / "a.tif", model_file, feedback))
    assert np.all(default != -9999)  # the NaN bands no longer make every pixel invalid
    assert [line for line in feedback.infos if "marked bad" in line] == [
        "Bands 2 and 5 are marked bad in the raster's metadata (bbl = 0) and left out: 6 bands are used. List bands "
        "in BANDS to choose them yourself."]
    listed = scores_of(run(run_alg, algorithm, source, tmp_path / "b.tif", model_file, BANDS="1,3-4,6-8"))
    np.testing.assert_array_equal(default, listed)
    feedback = Recorder()
    with pytest.raises(QgsProcessingException, match=r"^Band 5 of 'marked.tif' holds no valid value .* leave it "
                                                     r"out with BANDS '1, 3-4'\.$"):
        run(run_alg, algorithm, source, tmp_path / "c.tif", model_file, feedback, BANDS="1,3-5")
    assert feedback.warnings[:1] == ["BANDS includes band 5, which the raster's metadata marks bad (bbl = 0): noisy "
                                     "bands can weaken the results."]
    assert leftovers(tmp_path, {"marked.tif", "a.tif", "b.tif"}) == []


@pytest.mark.parametrize("algorithm", BOTH)
@pytest.mark.parametrize("nodata", [None, -32768.0])
def test_bands_without_any_valid_value_are_named_with_the_bands_to_give(run_alg, tmp_path, model_file, algorithm,
                                                                       nodata):
    source = with_empty_bands(tmp_path / "gaps.tif", [2, 5, 6], marked=False, nodata=nodata)
    refused(run_alg, algorithm, source, tmp_path, model_file, r"^Bands 2 and 5-6 of 'gaps.tif' hold no valid value "
            r"\(every pixel is nodata, NaN, infinite or a fill value there\), so no pixel is valid in every used band: "
            r"leave them out with BANDS '1, 3-4, 7-8'\.$", {"gaps.tif"})
    scores = scores_of(run(run_alg, algorithm, source, tmp_path / "s.tif", model_file, BANDS="1, 3-4, 7-8"))
    assert np.all(scores != -9999)


def test_fers_train_leaves_out_marked_bands_and_names_the_raster(run_alg, tmp_path):
    source = with_empty_bands(tmp_path / "bg.tif", [3], marked=True)
    feedback = Recorder()
    run_alg("fers:train", {"INPUTS": [source], "MODEL_BANDS": 6, "EPOCHS": 1, "PATCH_SIZE": 16, "BATCH_SIZE": 4,
                           "SEED": 3, "DEVICE": 1, "OUTPUT_MODEL": str(tmp_path / "m.pt")}, feedback)
    assert any(line.startswith("Band 3 is marked bad in bg.tif's metadata") for line in feedback.infos)
    assert any("bg.tif: 22x18 px, 7 raster bands resampled" in line for line in feedback.infos), feedback.infos
    assert (tmp_path / "m.pt").exists()




def write_scaled(path, raw, scales, offsets, nodata):
    dataset = gdal.GetDriverByName("GTiff").Create(str(path), raw.shape[2], raw.shape[1], raw.shape[0], gdal.GDT_Int16)
    dataset.SetGeoTransform((0, 1, 0, 0, 0, -1))
    dataset.SetProjection(utm_wkt())
    for index, (scale, offset) in enumerate(zip(scales, offsets)):
        band = dataset.GetRasterBand(index + 1)
        band.SetNoDataValue(nodata)
        band.SetScale(scale)
        band.SetOffset(offset)
        band.WriteArray(raw[index])
    dataset = None
    return str(path)


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", BOTH)
def test_scale_and_offset_are_applied(run_alg, tmp_path, model_file, algorithm):
    """An int16 raster with per-band scale/offset scores like the pre-scaled float raster.

    RX alone is invariant under any invertible affine map of the bands, per-band scales included,
    so for fers:rx the test checks nodata is tested on the stored values; fers:detect scales with
    one min/max over all bands, so unequal per-band scales change its scores: the raw raster must
    score differently, which shows the comparison can fail.
    """
    rng = np.random.default_rng(4)
    raw = rng.integers(200, 3000, (5, 16, 20)).astype(np.int16)
    raw[:, 3, 4] = -100  # nodata in every band
    raw[2, 7, 8] = -100  # nodata in one band
    scales, offsets = [0.5, 2.0, 0.01, 1.0, 7.5], [10.0, -300.0, 0.0, 1000.0, 2.0]
    scaled_source = write_scaled(tmp_path / "scaled.tif", raw, scales, offsets, -100)
    physical = raw.astype(np.float64) * np.array(scales)[:, None, None] + np.array(offsets)[:, None, None]
    invalid = (raw == -100).any(axis=0)
    physical[:, invalid] = np.nan
    float_source = write_cube(tmp_path / "float.tif", physical.astype(np.float32))
    a = scores_of(run(run_alg, algorithm, scaled_source, tmp_path / "a.tif", model_file))
    b = scores_of(run(run_alg, algorithm, float_source, tmp_path / "b.tif", model_file))
    assert np.all(a[invalid] == -9999) and np.all(a[~invalid] >= 0)
    np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-3 * b[~invalid].max())
    if algorithm == DETECT:
        plain = raw.astype(np.float32)
        plain[:, invalid] = np.nan
        unscaled = scores_of(run(run_alg, algorithm, write_cube(tmp_path / "raw.tif", plain), tmp_path / "c.tif",
                                 model_file))
        assert not np.allclose(unscaled, b, rtol=2e-3, atol=2e-3 * b[~invalid].max())


# ---------------------------------------------------------------------------------------------
# Model files


def write_wavelengths(path, data, wavelengths):
    write_cube(path, data)
    dataset = gdal.Open(str(path), gdal.GA_Update)
    for index, value in enumerate(wavelengths):
        dataset.GetRasterBand(index + 1).SetMetadata({"wavelength": f"{value:.1f}", "wavelength_units": "nm"})
    dataset = None
    return str(path)


@pytest.fixture(scope="module")
def wavelength_model(tmp_path_factory):
    """A 16-band spectral-only random model covering 400-2500 nm."""
    from fers.fers_core.enhance.model_file import random_init_model, save_model

    model = random_init_model(MODEL_BANDS, seed=0, branches=("spectral",))
    model.wavelengths_nm = list(np.linspace(400, 2500, MODEL_BANDS))
    path = tmp_path_factory.mktemp("wl") / "wl16.pt"
    save_model(model, path)
    return str(path)


def test_model_wavelength_range_not_covered_is_refused(run_alg, tmp_path, wavelength_model):
    source = write_wavelengths(tmp_path / "vnir.tif", cube(10), np.linspace(400, 1000, 10))
    refused(run_alg, DETECT, source, tmp_path, wavelength_model, r"cover only 29% of the model's range",
            {"vnir.tif"})


@pytest.mark.parametrize("detector", [0, 1])
def test_an_enhanced_cube_carries_the_model_s_wavelengths(run_alg, tmp_path, wavelength_model, detector):
    from fers.fers_core.io.reader import RasterReader

    source = write_wavelengths(tmp_path / "swir.tif", cube(20), np.linspace(420, 2300, 20))
    result = run(run_alg, DETECT, source, tmp_path / "s.tif", wavelength_model, DETECTOR=detector,
                 WINDOW_INNER=3, WINDOW_OUTER=9, OUTPUT_SPECTRAL=str(tmp_path / "cube.tif"))
    with RasterReader(result["OUTPUT_SPECTRAL"]) as enhanced:
        assert enhanced.wavelengths_nm == pytest.approx(list(np.linspace(400, 2500, MODEL_BANDS)), abs=1e-3)
    assert gdal.Open(result["OUTPUT_SPECTRAL"]).GetRasterBand(1).GetDescription() == "model band 1 (400.0 nm)"


def test_two_bands_of_one_wavelength_are_named_with_the_bands_to_use(run_alg, tmp_path, wavelength_model):
    wavelengths = np.linspace(420, 2300, 20)
    wavelengths[7] = wavelengths[8] = 1100
    source = write_wavelengths(tmp_path / "twice.tif", cube(20), wavelengths)
    refused(run_alg, DETECT, source, tmp_path, wavelength_model,
            r"^Bands 8 and 9 of the raster both list 1100 nm: .* leave one out, e.g. BANDS "
            r"'1-8, 10-20'\.$", {"twice.tif"})
    everywhere = write_wavelengths(tmp_path / "one.tif", cube(20), np.full(20, 400.0))  # advice went round 19 times
    refused(run_alg, DETECT, everywhere, tmp_path, wavelength_model,
            r"^All 20 selected bands of the raster list the same wavelength, 400 nm: its wavelength metadata is "
            r"wrong\.", {"twice.tif", "one.tif"})


@pytest.mark.slow
def test_model_wavelength_range_mostly_covered_runs(run_alg, tmp_path, wavelength_model):
    source = write_wavelengths(tmp_path / "swir.tif", cube(20), np.linspace(420, 2300, 20))
    feedback = Recorder()
    scores = scores_of(run(run_alg, DETECT, source, tmp_path / "s.tif", wavelength_model, feedback))
    assert np.isfinite(scores).all()
    assert any("resampled linearly over wavelength" in line for line in feedback.infos)


@pytest.mark.slow
def test_far_fewer_bands_than_the_model_warns(run_alg, tmp_path, model_file):
    source = write_cube(tmp_path / "cube.tif", cube(5))
    feedback = Recorder()
    scores = scores_of(run(run_alg, DETECT, source, tmp_path / "s.tif", model_file, feedback))
    assert np.isfinite(scores).all()
    assert any("far fewer than the model's 16" in line for line in feedback.warnings)


class WritesMarker:
    """Unpickling this object runs code that writes a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('pwned')",)


def pickled_code_files(folder, marker):
    """Model files whose loading would run code: torch's zip format and a bare pickle."""
    import torch

    zipped = folder / "evil_zip.pt"
    torch.save({"format": "fers-model", "payload": WritesMarker(marker)}, zipped)
    bare = folder / "evil_bare.pt"
    bare.write_bytes(pickle.dumps({"state_dict": WritesMarker(marker)}, protocol=2))
    checkpoint = folder / "evil_checkpoint"
    checkpoint.mkdir()
    for name in ("convh.pt", "enc.pt", "pc.pt"):
        torch.save({"state_dict": WritesMarker(marker)}, checkpoint / name)
    return [zipped, bare, checkpoint]


def test_pickling_really_runs_the_marker_code(tmp_path):
    """The payload is live: plain pickle.loads writes the marker (so its absence below means something)."""
    marker = tmp_path / "marker"
    pickle.loads(pickle.dumps(WritesMarker(marker)))
    assert marker.read_text() == "pwned"


def test_model_with_pickled_code_is_refused_without_running_it(run_alg, tmp_path, model_file):
    inputs = tmp_path / "in"
    inputs.mkdir()
    marker = tmp_path / "marker"
    source = write_cube(inputs / "cube.tif", cube(5))
    for path in pickled_code_files(inputs, marker):
        refused(run_alg, DETECT, source, tmp_path, model_file, "refused and not loaded because it holds Python objects",
                {"in"}, MODEL=str(path))
        assert not marker.exists(), path


def test_truncated_and_foreign_model_files_are_refused(run_alg, tmp_path, model_file):
    import torch

    inputs = tmp_path / "in"
    inputs.mkdir()
    source = write_cube(inputs / "cube.tif", cube(5))
    content = open(model_file, "rb").read()
    (inputs / "truncated.pt").write_bytes(content[: len(content) // 2])
    (inputs / "header_only.pt").write_bytes(content[:100])
    (inputs / "raster.pt").write_bytes(open(source, "rb").read())
    with zipfile.ZipFile(inputs / "other.zip.pt", "w") as archive:
        archive.writestr("readme.txt", "not a model")
    torch.save({"weights": torch.zeros(3)}, inputs / "other_torch.pt")
    (inputs / "empty.pt").write_bytes(b"")
    cases = {
        "truncated.pt": "damaged or incomplete",
        "header_only.pt": "damaged or incomplete",
        "raster.pt": "is not a PyTorch file",
        "other.zip.pt": "damaged or incomplete",
        "other_torch.pt": "is a PyTorch file but not a FERS model file",
        "empty.pt": "is empty",
    }
    for name, message in cases.items():
        refused(run_alg, DETECT, source, tmp_path, model_file, message, {"in"}, MODEL=str(inputs / name))


# ---------------------------------------------------------------------------------------------
# Output locations


@pytest.mark.parametrize("algorithm", BOTH)
def test_missing_output_folder_is_created(run_alg, tmp_path, model_file, algorithm):
    source = write_cube(tmp_path / "cube.tif", cube(5))
    output = tmp_path / "new" / "deeper" / "scores.tif"
    run(run_alg, algorithm, source, output, model_file)
    assert output.is_file() and read(output)[0].shape == (18, 22)


@pytest.mark.parametrize("algorithm", BOTH)
def test_output_under_a_file_is_refused(run_alg, tmp_path, model_file, algorithm):
    """A folder path whose parent is a regular file fails for root too (chmod does not stop root)."""
    source = write_cube(tmp_path / "cube.tif", cube(5))
    (tmp_path / "afile").write_text("x")
    refused(run_alg, algorithm, source, tmp_path, model_file, r"Cannot create the output folder .*afile",
            {"cube.tif", "afile"}, OUTPUT=str(tmp_path / "afile" / "sub" / "scores.tif"))


def test_enhanced_cube_output_under_a_file_leaves_no_score_raster(run_alg, tmp_path, model_file):
    source = write_cube(tmp_path / "cube.tif", cube(5))
    (tmp_path / "afile").write_text("x")
    refused(run_alg, DETECT, source, tmp_path, model_file, "Cannot create the output folder", {"cube.tif", "afile"},
            OUTPUT_SPECTRAL=str(tmp_path / "afile" / "spe.tif"))


@pytest.mark.parametrize("algorithm", BOTH)
def test_read_only_output_folder_is_refused(run_alg, tmp_path, model_file, algorithm):
    source = write_cube(tmp_path / "cube.tif", cube(5))
    locked, release = read_only_folder(tmp_path, "locked")
    try:
        refused(run_alg, algorithm, source, tmp_path, model_file, "Cannot write to the folder", {"cube.tif", "locked"},
                OUTPUT=str(locked / "scores.tif"))
        assert list(locked.iterdir()) == []
    finally:
        release()


# ---------------------------------------------------------------------------------------------
# Cancel


@pytest.mark.slow
@pytest.mark.parametrize("percent", [10, 50, 90])
def test_detect_cancel_leaves_no_output(run_alg, tmp_path, model_file, percent):
    source = write_cube(tmp_path / "cube.tif", cube(6, rows=400, cols=40))  # 5 strips at MEMORY_MB=1
    feedback = CancelAt(percent)
    with pytest.raises(QgsProcessingException, match="Cancelled"):
        run(run_alg, DETECT, source, tmp_path / "out" / "s.tif", model_file, feedback, BRANCHES=1, MEMORY_MB=1,
            OUTPUT_SPECTRAL=str(tmp_path / "out" / "spe.tif"))
    assert feedback.seen and max(feedback.seen) >= percent
    assert leftovers(tmp_path, {"cube.tif", "out"}) == []
    assert not (tmp_path / "out").exists() or leftovers(tmp_path / "out", set()) == []


# ---------------------------------------------------------------------------------------------
# Command line


@pytest.mark.slow
def test_qgis_process_reports_bad_inputs(tmp_path):
    marker = tmp_path / "marker"
    inputs = tmp_path / "in"
    inputs.mkdir()
    source = write_cube(inputs / "cube.tif", cube(5))
    empty = write_cube(inputs / "empty.tif", np.full((3, 6, 7), 0, np.uint8), nodata=0)
    evil = pickled_code_files(inputs, marker)[0]
    commands = {
        "refused and not loaded because it holds Python objects": [
            "fers:detect", f"INPUT={source}", f"MODEL={evil}", f"OUTPUT={tmp_path / 'out' / 'd.tif'}"],
        "No valid pixels": ["fers:rx", f"INPUT={empty}", f"OUTPUT={tmp_path / 'out' / 'r.tif'}"],
    }
    for message, arguments in commands.items():
        completed = subprocess.run([str(ROOT / "scripts" / "qgis_process"), "run", arguments[0], "--",
                                    *arguments[1:]], capture_output=True, text=True, timeout=120)
        assert completed.returncode != 0
        assert message in completed.stdout + completed.stderr, completed.stdout + completed.stderr
    assert not marker.exists()
    assert not (tmp_path / "out").exists() or leftovers(tmp_path / "out", set()) == []


# ---------------------------------------------------------------------------------------------
# Memory guard


def sparse_raster(path, cols, rows, bands, data_type=gdal.GDT_Int16):
    """A large raster that takes no disk space and no time (no block is written)."""
    dataset = gdal.GetDriverByName("GTiff").Create(str(path), cols, rows, bands, data_type,
                                                   ["SPARSE_OK=TRUE", "TILED=YES"])
    dataset.SetGeoTransform((0, 1, 0, 0, 0, -1))
    dataset = None
    return str(path)


@pytest.fixture
def little_memory(monkeypatch):
    """Pretend the machine has 1,000 MB available."""
    from fers.fers_core.pipeline import memory_guard

    monkeypatch.delenv(memory_guard.SKIP_VARIABLE, raising=False)
    monkeypatch.setattr(memory_guard, "available_memory_bytes", lambda: 1000 * memory_guard.MB)
    return memory_guard


@pytest.mark.parametrize("algorithm,extra,advice", [
    (RX, {"MEMORY_MB": 4096}, r"lower MEMORY_MB \(now 4096\)"),
    (RX, {"MODE": 1, "WINDOW_INNER": 5, "WINDOW_OUTER": 41, "MEMORY_MB": 4096}, r"lower MEMORY_MB \(now 4096\)"),
    (RX, {"MODE": 2, "WINDOW_INNER": 5, "WINDOW_OUTER": 41, "MEMORY_MB": 4096}, r"lower MEMORY_MB \(now 4096\)"),
    (RX, {"MODE": 3, "MEMORY_MB": 4096}, r"lower MEMORY_MB \(now 4096\)"),
    (DETECT, {"MEMORY_MB": 4096, "BRANCHES": 1}, r"lower MEMORY_MB \(now 4096\)"),
    (DETECT, {"TILE_SIZE": 1024}, r"lower TILE_SIZE \(now 1024\)"),
])
def test_memory_guard_refuses_with_the_numbers(run_alg, tmp_path, model_file, little_memory, algorithm, extra,
                                               advice):
    source = sparse_raster(tmp_path / "big.tif", 4000, 3000, 60)
    match = r"needs about [\d,]+ MB of memory but only 1,000 MB is available: " + advice + ", or close other"
    refused(run_alg, algorithm, source, tmp_path, model_file, match, {"big.tif"}, **extra)


@pytest.mark.parametrize("algorithm", BOTH)
def test_polygons_that_cannot_fit_are_refused_before_the_detector_runs(run_alg, tmp_path, model_file, little_memory,
                                                                       algorithm):
    source = sparse_raster(tmp_path / "big.tif", 12000, 12000, 3)  # 1,1xx MB of labels
    refused(run_alg, algorithm, source, tmp_path, model_file,
            r"Anomaly polygons of a 12000x12000 pixel mask needs about 1,1\d\d MB of memory but only 1,000 MB is "
            r"available: leave out the anomaly polygons, or run on a smaller extent", {"big.tif"},
            OUTPUT_POLYGONS=str(tmp_path / "out" / "objects.gpkg"))


@pytest.mark.parametrize("algorithm", BOTH)
def test_memory_guard_logs_the_numbers_when_the_run_fits(run_alg, tmp_path, model_file, little_memory, algorithm):
    source = write_cube(tmp_path / "cube.tif", cube(5))
    feedback = Recorder()
    run(run_alg, algorithm, source, tmp_path / "s.tif", model_file, feedback)
    assert any(line.startswith("Memory: about") and "1,000 MB available" in line for line in feedback.infos)


@pytest.mark.parametrize("extra, advice", [
    ({"MODEL_BANDS": 2000, "BATCH_SIZE": 4, "PATCH_SIZE": 16}, r"lower MODEL_BANDS \(now 2000\)"),
    ({"MODEL_BANDS": 200, "BATCH_SIZE": 64, "PATCH_SIZE": 64}, r"lower BATCH_SIZE \(now 64\) or PATCH_SIZE \(now 64\)"),
])
def test_training_memory_guard_refuses_before_any_work(run_alg, tmp_path, little_memory, monkeypatch, extra, advice):
    source = write_cube(tmp_path / "cube.tif", cube(5))
    output = tmp_path / "out" / "m.pt"
    with pytest.raises(QgsProcessingException, match=rf"^Training a \d+-band model needs about [\d,]+ MB of memory but "
                                                     rf"only 1,000 MB is available: {advice}, or close other"):
        run_alg("fers:train", {"INPUTS": [source], "EPOCHS": 1, "OUTPUT_MODEL": str(output), **extra})
    assert not output.parent.exists() or leftovers(output.parent, set()) == []  # no model, no resume checkpoint
    monkeypatch.setattr(little_memory, "available_memory_bytes", lambda: 4000 * little_memory.MB)
    feedback = Recorder()
    run_alg("fers:train", {"INPUTS": [source], "MODEL_BANDS": 6, "EPOCHS": 1, "PATCH_SIZE": 16, "BATCH_SIZE": 4,
                           "STAGES": 1, "OUTPUT_MODEL": str(output)}, feedback)
    assert any(line.startswith("Memory: about") and "4,000 MB available" in line for line in feedback.infos)
    assert output.exists()


def test_memory_guard_can_be_skipped(run_alg, tmp_path, model_file, little_memory, monkeypatch):
    monkeypatch.setenv(little_memory.SKIP_VARIABLE, "1")
    estimate = little_memory.MemoryEstimate("A run", {"lower MEMORY_MB (now 1)": 10**12})
    little_memory.check_memory(estimate)  # no error


def test_available_memory_is_read_from_the_system():
    from fers.fers_core.pipeline import memory_guard

    available = memory_guard.available_memory_bytes()
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert available is not None and 0 < available <= total


@pytest.mark.parametrize("version", [1, 2])
def test_container_memory_limit_lowers_the_available_memory(tmp_path, version):
    from fers.fers_core.pipeline import memory_guard

    folder = tmp_path / ("memory" if version == 1 else "")
    folder.mkdir(exist_ok=True)
    names = (("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file") if version == 1
             else ("memory.max", "memory.current", "inactive_file"))
    (folder / names[0]).write_text(str(2000 * 2**20))
    (folder / names[1]).write_text(str(1500 * 2**20))
    (folder / "memory.stat").write_text(f"active_file 1\n{names[2]} {300 * 2**20}\n")
    assert memory_guard._cgroup_headroom(str(tmp_path)) == 800 * 2**20
    (folder / names[0]).write_text("max" if version == 2 else str(2**63 - 4096))
    assert memory_guard._cgroup_headroom(str(tmp_path)) is None


MEASURE = """
import json, sys
sys.path.insert(0, {root!r} + "/.plugins")
from fers.fers_core.pipeline import memory_guard
from fers.fers_core.io.reader import RasterReader

def rss(key):
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith(key))

path, output = sys.argv[1], sys.argv[2]
with RasterReader(path) as reader:
    if sys.argv[3] == "rx":
        from fers.fers_core.detectors.global_rx import run_global_rx
        estimate = memory_guard.estimate_global_rx(reader, 8)
        before = rss("VmRSS")
        run_global_rx(path, output, block_mb=8)
    else:
        from fers.fers_core.pipeline.detect import run_fers_detection
        from fers.fers_core.pipeline.options import DetectOptions
        from fers.fers_core.enhance.model_file import random_init_model
        model = random_init_model(16)
        estimate = memory_guard.estimate_detection(reader, 16, 8)
        before = rss("VmRSS")
        run_fers_detection(path, output, model, DetectOptions(block_mb=8, fusion="sum", device="cpu"))
print(json.dumps([rss("VmHWM") - before, estimate.bytes]))
"""


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="peak memory is read from /proc (Linux)")
@pytest.mark.parametrize("kind,shape", [("rx", (60, 300, 400)), ("detect", (20, 100, 120))])
def test_memory_estimate_covers_the_measured_peak(tmp_path, kind, shape):
    """The estimate is at least the peak resident memory the run adds, and not wildly more."""
    import json
    import sys

    data = np.random.default_rng(0).integers(0, 1000, shape).astype(np.int16)
    source = write_cube(tmp_path / "cube.tif", data)
    completed = subprocess.run([sys.executable, "-c", MEASURE.format(root=str(ROOT)), source,
                                str(tmp_path / "out.tif"), kind], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    measured, estimated = json.loads(completed.stdout.strip().splitlines()[-1])
    assert measured <= estimated <= 4 * measured + 200 * 2**20, (measured, estimated)


# ---------------------------------------------------------------------------------------------
# PyTorch missing


def system_python_has_torch():
    completed = subprocess.run(["/usr/bin/python3", "-c", "import importlib.util, sys; "
                                "sys.exit(0 if importlib.util.find_spec('torch') else 3)"], capture_output=True)
    return completed.returncode == 0


@pytest.mark.slow
def test_without_torch_rx_works_and_the_networks_explain_how_to_install_it(tmp_path):
    """qgis_process with the system Python (no venv, no torch) and a fresh profile with the plugin enabled."""
    if not os.path.exists("/usr/bin/qgis_process.bin"):
        pytest.skip("/usr/bin/qgis_process.bin is absent (Debian's qgis package)")
    if system_python_has_torch():
        pytest.skip("/usr/bin/python3 has torch installed, so QGIS cannot be run without it here")
    from fers.fers_core.enhance.torch_support import install_hint
    from fers.fers_core.runtime.torch_installer import packages_folder

    (ROOT / ".run" / "xdg").mkdir(parents=True, exist_ok=True)
    (ROOT / ".plugins").mkdir(exist_ok=True)
    if not (ROOT / ".plugins" / "fers").exists():
        (ROOT / ".plugins" / "fers").symlink_to(ROOT)
    environment = {
        "HOME": str(tmp_path), "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
        "QT_QPA_PLATFORM": "offscreen", "XDG_RUNTIME_DIR": str(ROOT / ".run" / "xdg"),
        "QGIS_CUSTOM_CONFIG_PATH": str(tmp_path / "profile"), "QGIS_PLUGINPATH": str(ROOT / ".plugins"),
    }

    def qgis_process(*arguments):
        return subprocess.run(["/usr/bin/qgis_process.bin", *arguments], capture_output=True, text=True,
                              timeout=120, env=environment, cwd=tmp_path)

    assert qgis_process("plugins", "enable", "fers").returncode == 0
    listed = qgis_process("list")
    assert {"fers:rx", "fers:detect", "fers:import_checkpoint"} <= set(listed.stdout.split()), listed.stderr
    source = write_cube(tmp_path / "cube.tif", cube(5))
    rx = qgis_process("run", "fers:rx", "--", f"INPUT={source}", f"OUTPUT={tmp_path / 'rx.tif'}")
    assert rx.returncode == 0, rx.stdout + rx.stderr
    assert read(tmp_path / "rx.tif")[0].shape == (18, 22)
    detect = qgis_process("run", "fers:detect", "--", f"INPUT={source}", f"OUTPUT={tmp_path / 'd.tif'}")
    assert detect.returncode != 0
    profile_packages = packages_folder(tmp_path / "profile" / "profiles" / "default")  # the hint names the real one
    expected = f"The FERS networks need PyTorch, which is not installed: {install_hint(profile_packages)}"
    assert expected in detect.stdout + detect.stderr
    assert not (tmp_path / "d.tif").exists()


BLOCK_TORCH = """
import sys
from importlib.abc import MetaPathFinder

class NoTorch(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked for this test")

sys.meta_path.insert(0, NoTorch())
sys.path[:0] = [{plugins!r}, "/usr/share/qgis/python/plugins"]
from qgis.core import QgsApplication
app = QgsApplication([], False)
app.initQgis()
import fers
plugin = fers.classFactory(None)
plugin.initProcessing()
ids = sorted(a.id() for a in QgsApplication.processingRegistry().providerById("fers").algorithms())
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "dask", "distributed"))
print(ids, loaded)
"""


@pytest.mark.slow
def test_loading_the_plugin_imports_no_torch(tmp_path):
    """No module the algorithms import at load time imports torch (or dask)."""
    import sys

    environment = dict(os.environ, QGIS_CUSTOM_CONFIG_PATH=str(tmp_path), QT_QPA_PLATFORM="offscreen")
    completed = subprocess.run([sys.executable, "-c", BLOCK_TORCH.format(plugins=str(ROOT / ".plugins"))],
                               capture_output=True, text=True, timeout=120, env=environment)
    assert completed.returncode == 0, completed.stderr
    line = completed.stdout.strip().splitlines()[-1]
    assert "'fers:rx'" in line and "'fers:detect'" in line and line.endswith(" []"), line
