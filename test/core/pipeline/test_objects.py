"""The polygons pass on masks of many objects: progress, cancel at every stage, the memory it needs."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from osgeo import ogr

from fers.fers_core.errors import Cancelled, InputError
from fers.fers_core.feedback import Feedback
from fers.fers_core.pipeline import memory_guard
from fers.fers_core.pipeline.objects import (
    PROGRESS_EVERY,
    check_polygons_run,
    write_polygons,
)

from ...conftest import ROOT
from ...rasters import leftovers, write_cube


class Recorder(Feedback):
    """Records progress and log lines; cancels once progress reaches `cancel_at` percent."""

    def __init__(self, cancel_at=None):
        self.progress, self.infos, self.cancel_at = [], [], cancel_at

    def set_progress(self, percent):
        self.progress.append(percent)

    def is_cancelled(self):
        return self.cancel_at is not None and bool(self.progress) and self.progress[-1] >= self.cancel_at

    def info(self, message):
        self.infos.append(message)


def many_objects(tmp_path, size=700, density=0.015):
    """A mask of thousands of small objects and its scores."""
    rng = np.random.default_rng(1)
    mask = (rng.random((size, size)) < density).astype(np.uint8)
    scores = rng.random((size, size)).astype(np.float32)
    return (write_cube(tmp_path / "mask.tif", mask, nodata=255), write_cube(tmp_path / "scores.tif", scores),
            mask)


def test_many_objects_report_progress_in_order_and_say_what_they_do(tmp_path):
    mask_path, score_path, _ = many_objects(tmp_path)
    feedback = Recorder()
    summary = write_polygons(mask_path, score_path, tmp_path / "objects.gpkg", feedback=feedback)
    assert summary.objects > PROGRESS_EVERY
    assert feedback.progress == sorted(feedback.progress) and feedback.progress[-1] == 100
    tracing = [p for p in feedback.progress if 45 < p < 65]
    writing = [p for p in feedback.progress if 65 < p < 100]
    assert len(tracing) > 10 and len(writing) >= 40, (len(tracing), len(writing))  # no silent stretch
    assert any("labelling" in line for line in feedback.infos)
    assert any(f"tracing and writing the outlines of {summary.objects} object(s)" in line for line in feedback.infos)
    layer = ogr.Open(str(tmp_path / "objects.gpkg"))
    assert layer.GetLayerCount() == 1 and layer.GetLayer(0).GetFeatureCount() == summary.objects  # no scratch layer
    assert leftovers(tmp_path, {"mask.tif", "scores.tif", "objects.gpkg"}) == []


@pytest.mark.parametrize("cancel_at", [5, 30, 50, 70, 90])  # reading, attributes, tracing, writing, writing
def test_cancel_stops_every_stage_and_leaves_no_file(tmp_path, cancel_at):
    mask_path, score_path, _ = many_objects(tmp_path)
    feedback = Recorder(cancel_at)
    with pytest.raises(Cancelled):
        write_polygons(mask_path, score_path, tmp_path / "objects.gpkg", feedback=feedback, block_mb=1)
    late = [p for p in feedback.progress if p >= cancel_at]
    assert len(late) == 1 and late[0] < cancel_at + 5, late  # stopped at the next report, which came soon
    assert leftovers(tmp_path, {"mask.tif", "scores.tif"}) == []  # neither the polygons nor the scratch outlines


def test_polygons_are_refused_before_the_run_when_memory_is_short(tmp_path, monkeypatch):
    monkeypatch.delenv(memory_guard.SKIP_VARIABLE, raising=False)
    monkeypatch.setattr(memory_guard, "available_memory_bytes", lambda: 1000 * memory_guard.MB)
    from osgeo import gdal

    big = str(tmp_path / "big.tif")  # sparse: no block written
    gdal.GetDriverByName("GTiff").Create(big, 12000, 12000, 1, gdal.GDT_Byte, ["SPARSE_OK=TRUE", "TILED=YES"])
    with pytest.raises(InputError, match=r"^Anomaly polygons of a 12000x12000 pixel mask needs about 1,1\d\d MB of "
                                         r"memory but only 1,000 MB is available: leave out the anomaly polygons"):
        check_polygons_run(big)
    small = write_cube(tmp_path / "small.tif", np.zeros((1, 50, 50), np.uint8))
    feedback = Recorder()
    check_polygons_run(small, feedback)
    assert any(line.startswith("Memory for the anomaly polygons: about") for line in feedback.infos)


MEASURE = """
import json, sys
sys.path.insert(0, {root!r} + "/.plugins")
from fers.fers_core.pipeline.objects import estimate_polygons, write_polygons

def rss(key):
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith(key))

mask, scores, output = sys.argv[1:4]
before = rss("VmRSS")
summary = write_polygons(mask, scores, output)
print(json.dumps([rss("VmHWM") - before, estimate_polygons(1500, 1500, summary.objects).bytes, summary.objects]))
"""


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="peak memory is read from /proc (Linux)")
def test_polygons_memory_estimate_covers_the_measured_peak(tmp_path):
    mask_path, score_path, _ = many_objects(tmp_path, size=1500, density=0.02)
    completed = subprocess.run([sys.executable, "-c", MEASURE.format(root=str(ROOT)), mask_path, score_path,
                                str(tmp_path / "objects.gpkg")], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    measured, estimated, objects = json.loads(completed.stdout.strip().splitlines()[-1])
    assert objects > 30000
    assert measured <= estimated <= 4 * measured + 200 * 2**20, (measured, estimated)
