"""The training memory guard: its estimate covers a measured peak, and a run it refuses names the numbers."""

import json
import subprocess
import sys

import numpy as np
import pytest

from fers.fers_core.training.data import TrainingRaster
from fers.fers_core.training.memory import estimate_training

from ...conftest import ROOT
from ...rasters import write_cube

PEAK_SCRIPT = """
import json, resource, sys
sys.path.insert(0, sys.argv[1])
from fers_core.synthetic import write_scene
from fers_core.training.run import TrainOptions, train_model
scene, _ = write_scene(sys.argv[2] + "/s.tif", sys.argv[2] + "/t.tif", rows=48, cols=48, bands=30, seed=1)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
train_model(TrainOptions(inputs=[scene], output_model=sys.argv[2] + "/m.pt", model_bands=int(sys.argv[3]), epochs=1,
                         patch_size=32, batch_size=8, resume=False, patches_per_epoch=16, device="cpu"))
print(json.dumps({"scene": scene, "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "before": before}))
"""


@pytest.mark.slow
def test_the_estimate_covers_the_measured_peak_of_both_stages(tmp_path):
    bands = 300
    completed = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(ROOT), str(tmp_path), str(bands)],
                               capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert completed.returncode == 0, completed.stderr
    measured = json.loads(completed.stdout.strip().splitlines()[-1])
    estimate = estimate_training([TrainingRaster(measured["scene"])], bands, 8, 32).bytes
    grown = measured["peak"] - measured["before"]
    assert grown <= estimate <= 3 * measured["peak"], (grown, estimate)


def test_the_cubes_count_once_plus_the_largest_and_a_gpu_holds_the_networks(tmp_path):
    small = write_cube(tmp_path / "small.tif", np.ones((3, 10, 20), np.float32))
    large = write_cube(tmp_path / "large.tif", np.ones((3, 30, 40), np.float32))
    rasters = [TrainingRaster(small), TrainingRaster(large)]
    on_cpu = estimate_training(rasters, 50, 16, 64)
    assert on_cpu.parts["train on smaller background areas"] == 4 * 50 * (200 + 1200 + 1200)
    assert on_cpu.parts["lower BATCH_SIZE (now 16) or PATCH_SIZE (now 64)"] == 140 * 50 * 16 * 64 ** 2
    on_gpu = estimate_training(rasters, 50, 16, 64, device="cuda")
    assert list(on_gpu.parts) == ["train on smaller background areas"] and on_gpu.bytes < on_cpu.bytes
