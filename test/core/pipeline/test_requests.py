"""The engine's request check (pipeline/requests.py): which combinations of settings a run refuses, and with what
message, before any pixel is read; the QGIS algorithms call the same functions."""

import subprocess
import sys
from pathlib import Path

import pytest

from fers.fers_core.choices import Fusion
from fers.fers_core.errors import InputError
from fers.fers_core.pipeline.objects import write_polygons
from fers.fers_core.pipeline.postprocess import threshold_value
from fers.fers_core.pipeline.requests import (
    ABSOLUTE,
    FALSE_ALARM_RATE,
    TOP_PERCENT,
    check_detect_request,
    check_polygons_path,
    check_rx_request,
    check_spatial_tiles,
    check_threshold,
)

ROOT = Path(__file__).resolve().parents[3]
NO_LAW = "so a false-alarm-rate threshold does not apply: choose a top-percentage or absolute threshold"


@pytest.mark.parametrize("variant, settings, message", [
    (("utd", None, 0), {"false_alarm_rate": True}, f"^UTD, global mean scores follow no chi-square law, {NO_LAW}.$"),
    (("rxd-utd", 9, 3), {"false_alarm_rate": True},
     r"^RXD-UTD, local mean \(9 px kernel, 3 px guard\) scores follow no chi-square law"),
    (None, {"local_windows": (4, 21)}, "inner .guard. window must be an odd"),
    (None, {"local_windows": (7, 7)}, "larger than the inner window"),
])
def test_rx_requests_that_do_not_go_together_are_refused(variant, settings, message):
    with pytest.raises(InputError, match=message):
        check_rx_request(variant, **settings)


@pytest.mark.parametrize("variant, settings", [
    (None, {"false_alarm_rate": True}),  # global RX has a chi-square law
    (("rxd", 9, 3), {"false_alarm_rate": True}),  # RXD keeps the chi-square law
    (("utd", None, 0), {}),  # no threshold asked for
    (None, {"local_windows": (5, 21), "false_alarm_rate": True}),
])
def test_rx_requests_that_go_together_pass(variant, settings):
    check_rx_request(variant, **settings)


@pytest.mark.parametrize("detector, settings, message", [
    ("global", {"scheduler": "local", "members": 2}, r"runs one model: .*or set one MODEL\.$"),
    ("utd", {"false_alarm_rate": True}, f"^UTD and RXD-UTD scores follow no chi-square law, {NO_LAW}.$"),
    ("global", {"false_alarm_rate": True, "members": 3},
     f"^Fused ensemble scores have no chi-square law, {NO_LAW}, or run one model \\(set MODEL, e.g. the bundled "
     r"fers_default.pt\) with sum fusion of its branches \(FUSION\) or one branch \(BRANCHES\)\.$"),
    ("global", {"false_alarm_rate": True, "fusion": Fusion.PRODUCT},
     f"^Product fusion gives normalised scores with no chi-square law, {NO_LAW}, or sum fusion of the branches "
     r"\(FUSION\) or one branch \(BRANCHES\)\.$"),
    ("rxd-local-mean", {"windows": (9, 9)}, "must be smaller than the local mean kernel"),
    ("nearest", {}, "Unknown detector 'nearest'"),
])
def test_detect_requests_that_do_not_go_together_are_refused(detector, settings, message):
    with pytest.raises(InputError, match=message):
        check_detect_request(detector, **settings)


@pytest.mark.parametrize("detector, settings", [
    ("global", {"scheduler": "local", "false_alarm_rate": True, "fusion": Fusion.SUM}),
    ("local", {"scheduler": "local"}),  # every detector runs on a cluster too
    ("rxd-utd", {"scheduler": "tcp://host:8786"}),
    ("rxd-local-mean", {"false_alarm_rate": True, "fusion": Fusion.SINGLE}),  # RXD keeps the chi-square law
    ("utd", {"members": 2}),  # an ensemble without a false-alarm-rate threshold
    ("global", {"fusion": Fusion.PRODUCT}),  # product fusion with a top-percentage or absolute threshold
])
def test_detect_requests_that_go_together_pass(detector, settings):
    check_detect_request(detector, **settings)


def test_spatial_tiles_need_a_core():
    check_spatial_tiles(32, 15)
    with pytest.raises(InputError, match=r"TILE_MARGIN, 16\) must be less than half of the spatial tile size "
                                         r"\(TILE_SIZE, 32\)"):
        check_spatial_tiles(32, 16)


@pytest.mark.parametrize("method, value, message", [
    (TOP_PERCENT, 0.0, r"top percentage must be greater than 0 and at most 100 \(got 0\): use e.g. 0.2"),
    (TOP_PERCENT, 150.0, "top percentage"),
    (FALSE_ALARM_RATE, 100.0, "false-alarm rate must be a percentage between 0 and 100"),
    (ABSOLUTE, float("nan"), "finite score value"),
    (7, 1.0, "Unknown threshold method 7"),
])
def test_thresholds_a_method_cannot_read_are_refused(method, value, message):
    with pytest.raises(InputError, match=message):
        check_threshold(method, value)
    with pytest.raises(InputError, match=message):  # the threshold itself applies the same rule
        threshold_value("never-read.tif", method, value, n_features=3)


def test_polygons_go_to_a_geopackage(tmp_path):
    check_polygons_path(tmp_path / "objects.GPKG")
    with pytest.raises(InputError, match=r"^Anomaly polygons are written as a GeoPackage: .*objects\.shp"):
        check_polygons_path(tmp_path / "objects.shp")
    with pytest.raises(InputError, match="Anomaly polygons are written as a GeoPackage"):
        write_polygons("never-read.tif", "never-read.tif", tmp_path / "objects.shp")


def test_the_request_check_imports_neither_torch_nor_qgis():
    """The QGIS dialog checks a request without loading the networks, and the command line without QGIS."""
    script = (f"import sys; sys.path.insert(0, {str(ROOT / '.plugins')!r}); import fers.fers_core.pipeline.requests; "
              "print(sorted(m for m in ('torch', 'qgis') if m in sys.modules))")
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "[]"
