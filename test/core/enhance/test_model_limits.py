"""Model files whose declared sizes the file cannot hold are refused before any network or tensor copy is made.

A tensor's shape is metadata: a few bytes of storage can be saved as billions of values (zero strides), and the
old loader checked, converted and copied such tensors in full (a 22 KB file declaring 4,000,000 bands took the
process from 220 MB to 3.2 GB before anything refused it).
"""

import subprocess
import sys

import pytest
import torch

from fers.fers_core.enhance.checkpoints import load_any_model
from fers.fers_core.enhance.model_file import MAX_MODEL_BANDS, _file_content, random_init_model
from fers.fers_core.enhance.networks.spectral import SpectralEnhancer
from fers.fers_core.errors import ModelFileError

from ...conftest import ROOT

PEAK_LIMIT_MB = 600  # the child imports torch (about 220 MB); the old loader reached 3,190 MB on the 4M-band file


def forged(path, bands, declared_bands=None):
    """A spectral model file for `bands` bands whose every tensor is one value expanded to its full shape."""
    content = _file_content(random_init_model(8, seed=0, branches=("spectral",)))
    content["bands"] = declared_bands or bands
    content["architecture"]["spectral"] = {"head_width": SpectralEnhancer(8).head_width}
    with torch.device("meta"):
        shapes = SpectralEnhancer(bands, head_width=content["architecture"]["spectral"]["head_width"]).state_dict()
    content["state_dicts"]["spectral"] = {
        key: torch.zeros(1, dtype=meta.dtype).expand(meta.shape) if meta.dim() else torch.zeros((), dtype=meta.dtype)
        for key, meta in shapes.items()
    }
    torch.save(content, path)
    return path


def peak_of_loading(path):
    """(message of the refusal, peak RSS in MB) of loading `path` in a fresh Python process.

    The peak is the child's own (VmHWM): ru_maxrss survives exec on Linux, so it would report the parent's
    (pytest's) resident size when that is larger.
    """
    code = (
        "import sys\n"
        "from fers_core.enhance.checkpoints import load_any_model\n"
        "from fers_core.errors import ModelFileError\n"
        "try:\n"
        "    load_any_model(sys.argv[1]); print('LOADED')\n"
        "except ModelFileError as error:\n"
        "    print('REFUSED', error)\n"
        "hwm = [line for line in open('/proc/self/status') if line.startswith('VmHWM:')][0]\n"
        "print('PEAK_MB', int(hwm.split()[1]) // 1024)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    lines = done.stdout.splitlines()
    assert done.returncode == 0 and lines, done.stderr[-2000:]
    return lines[0], int(lines[-1].split()[1])


@pytest.mark.slow
def test_millions_of_declared_bands_are_refused_from_the_header(tmp_path):
    path = forged(tmp_path / "huge.pt", 64, declared_bands=4_000_000)
    assert path.stat().st_size < 64 * 1024
    message, peak = peak_of_loading(path)
    assert message.startswith("REFUSED") and "declares 4,000,000 bands" in message
    assert peak < PEAK_LIMIT_MB


@pytest.mark.slow
@pytest.mark.parametrize("bands", [4_000_000, 5_000])
def test_tensors_declaring_more_values_than_stored_are_refused(tmp_path, bands):
    """Consistent header and tensor shapes, storage of one value each: refused before any copy."""
    path = forged(tmp_path / "expanded.pt", bands)
    message, peak = peak_of_loading(path)
    assert message.startswith("REFUSED"), message
    assert "declares" in message and ("bands" in message or "holds only" in message)
    assert peak < PEAK_LIMIT_MB


def test_expanded_tensor_within_the_band_limit_names_the_tensor(tmp_path):
    path = forged(tmp_path / "expanded.pt", 300)
    with pytest.raises(ModelFileError, match=r"tensor 'convh.weight' .* holds only 4 bytes"):
        load_any_model(path)


def test_band_limit_is_above_every_spectrometer_and_real_models_still_load(tmp_path):
    assert MAX_MODEL_BANDS >= 9000
    from fers.fers_core.enhance.model_file import save_model

    save_model(random_init_model(12, seed=0), tmp_path / "ok.pt")
    assert load_any_model(tmp_path / "ok.pt").bands == 12
