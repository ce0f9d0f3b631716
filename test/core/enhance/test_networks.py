"""Shapes of the three networks, and exact tiling of the spectral network."""

import pytest
import torch

from fers.fers_core.enhance.features import compute_features, spectral_halo
from fers.fers_core.enhance.model_file import random_init_model
from fers.fers_core.enhance.networks import FeatureRestorer, SpatialStudent, SpectralEnhancer
from fers.fers_core.enhance.networks.spectral import pad_image_edges

BANDS = 6
SIZES = [(1, 1), (3, 7), (64, 64), (37, 90)]


@pytest.fixture(scope="module")
def networks():
    torch.manual_seed(0)
    return {
        "spectral": SpectralEnhancer(BANDS).eval(),
        "spatial": SpatialStudent(BANDS).eval(),
        "restorer": FeatureRestorer(BANDS).eval(),
    }


def randomise_batch_norms(network, seed):
    """Give every BN non-trivial running statistics, so the tests exercise them."""
    generator = torch.Generator().manual_seed(seed)
    for module in network.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
    return network


@pytest.mark.slow
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", ["spectral", "spatial", "restorer"])
def test_output_has_input_shape(networks, name, size):
    x = torch.randn(1, BANDS, *size)
    with torch.inference_mode():
        out = networks[name](x)
    assert out.shape == x.shape
    assert torch.isfinite(out).all()


def test_spectral_head_width_and_checkpoint_names():
    assert SpectralEnhancer(100).head_width == 128
    assert SpectralEnhancer(200).head_width == 256
    assert SpectralEnhancer(50, head_width=64).pixel_head.conv1.out_channels == 64
    keys = SpectralEnhancer(50).state_dict()
    for key in ("convh.weight", "encoder.layer1.0.downsample.0.weight", "encoder.layer1.2.bn3.running_var",
                "pixel_head.conv1.bias", "pixel_head.conv3.weight"):
        assert key in keys


def test_spatial_gate_width_for_few_bands():
    assert SpatialStudent(3).head.gate.squeeze.out_channels == 1
    assert SpatialStudent(200).head.gate.squeeze.out_channels == 25


def spectral_by_tiles(network, x, row_cuts, col_cuts):
    """Run ``network`` tile by tile with a halo, the way a tiler does, and stitch the result."""
    height, width = x.shape[-2:]
    out = torch.zeros_like(x)
    halo = network.HALO
    for top, bottom in zip(row_cuts[:-1], row_cuts[1:]):
        for left, right in zip(col_cuts[:-1], col_cuts[1:]):
            read_top, read_bottom = max(top - halo, 0), min(bottom + halo, height)
            read_left, read_right = max(left - halo, 0), min(right + halo, width)
            tile = x[..., read_top:read_bottom, read_left:read_right]
            tile = pad_image_edges(
                tile,
                halo - (top - read_top), halo - (read_bottom - bottom),
                halo - (left - read_left), halo - (read_right - right),
                image_height=height, image_width=width,
            )
            out[..., top:bottom, left:right] = network.forward_unpadded(tile, context=halo)
    return out


@pytest.mark.slow
@pytest.mark.parametrize(
    "size, row_cuts, col_cuts",
    [
        ((30, 41), [0, 17, 30], [0, 20, 41]),
        ((12, 9), [0, 1, 5, 12], [0, 4, 9]),
        ((4, 23), [0, 4], [0, 2, 11, 23]),  # 4 rows: replicate padding along rows
    ],
)
def test_spectral_tiles_with_halo_equal_whole_image(size, row_cuts, col_cuts):
    assert spectral_halo == SpectralEnhancer.HALO == 3 and SpectralEnhancer.PADDING == 4
    torch.manual_seed(1)
    network = randomise_batch_norms(SpectralEnhancer(BANDS), seed=2).eval()
    x = torch.rand(1, BANDS, *size) * 0.2 - 0.1
    with torch.inference_mode():
        whole = network(x)
        tiled = spectral_by_tiles(network, x, row_cuts, col_cuts)
    assert whole.abs().max() > 0, "a test with an all-zero output would prove nothing"
    torch.testing.assert_close(tiled, whole, rtol=1e-5, atol=1e-5)


def test_compute_features_returns_numpy_per_branch():
    model = random_init_model(BANDS, seed=0)
    cube = torch.rand(BANDS, 9, 11).numpy()
    features = compute_features(model, cube, ["spectral", "spatial"])
    assert set(features) == {"spectral", "spatial"}
    assert all(value.shape == cube.shape and value.dtype == "float32" for value in features.values())


def test_compute_features_rejects_wrong_band_count_and_unknown_branch():
    from fers.fers_core.errors import InputError

    model = random_init_model(BANDS, seed=0, branches=("spectral",))
    with pytest.raises(InputError, match="expects a cube of 6 bands"):
        compute_features(model, torch.zeros(BANDS + 1, 4, 4))
    with pytest.raises(InputError, match="no spatial branch"):
        compute_features(model, torch.zeros(BANDS, 4, 4), ["spatial"])


@pytest.mark.slow
@pytest.mark.parametrize("size", [(1, 1), (5, 3), (64, 64), (37, 90)])
@pytest.mark.parametrize("name", ["spectral", "spatial"])
def test_inference_copy_equals_the_network_and_leaves_it_untouched(name, size):
    """BN folded, pixel-wise false colour, channels-last: the same function up to float32 rounding."""
    from fers.fers_core.enhance.networks.inference import inference_copy

    torch.manual_seed(1)
    network = randomise_batch_norms({"spectral": SpectralEnhancer, "spatial": SpatialStudent}[name](BANDS), 3)
    network.train()
    before = {key: value.clone() for key, value in network.state_dict().items()}
    copy = inference_copy(network)
    assert not any(isinstance(module, torch.nn.BatchNorm2d) for module in copy.modules())
    assert network.training and any(isinstance(module, torch.nn.BatchNorm2d) for module in network.modules())
    assert all(torch.equal(before[key], value) for key, value in network.state_dict().items())
    x = torch.rand(2, BANDS, *size) * 0.2 - 0.1
    with torch.inference_mode():
        expected = network.eval()(x)
        got = copy(x.contiguous(memory_format=torch.channels_last))
    assert expected.abs().max() > 0
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["spectral", "spatial"])
def test_mixed_inference_copy_runs_only_its_trunk_in_bfloat16(name):
    from fers.fers_core.enhance.networks.inference import LowPrecision, inference_copy

    torch.manual_seed(2)
    network = randomise_batch_norms({"spectral": SpectralEnhancer, "spatial": SpatialStudent}[name](BANDS), 4).eval()
    copy = inference_copy(network, mixed=True)
    low = [module for module in copy.modules() if isinstance(module, LowPrecision)]
    assert len(low) == 1 and low[0] is getattr(copy, "encoder" if name == "spectral" else "backbone")
    assert all(p.dtype == torch.bfloat16 for p in low[0].parameters())
    x = torch.rand(1, BANDS, 40, 40) * 0.2 - 0.1
    with torch.inference_mode():
        expected, got = network(x), copy(x)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=0.05, atol=0.02 * float(expected.abs().max()))
