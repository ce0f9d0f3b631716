"""Training internals: losses on known inputs, background patches, checkpoints."""

import numpy as np
import pytest
import torch

from fers.fers_core.errors import Cancelled, InputError
from fers.fers_core.training.data import BackgroundCube, PatchSampler, TrainingRaster, load_background, window_fractions
from fers.fers_core.training.losses import (
    alignment_loss,
    cosine_similarity_loss,
    cross_covariance_loss,
    distillation_cosine_loss,
    ssim_loss,
    variance_loss,
)

from ...rasters import write_cube


def orthogonal_features(channels=8, batch=2, side=16):
    """(batch, channels, side, side) with zero-mean, mutually orthogonal +-1 channels (Hadamard rows)."""
    hadamard = np.array([[1.0]])
    while hadamard.shape[0] < batch * side * side:
        hadamard = np.block([[hadamard, hadamard], [hadamard, -hadamard]])
    rows = hadamard[1:channels + 1]  # row 0 is constant
    return torch.tensor(rows.reshape(channels, batch, side, side).transpose(1, 0, 2, 3), dtype=torch.float32)


def test_cross_covariance_of_identical_standardised_features_is_the_channel_count():
    features = orthogonal_features()
    n = features.numel() // features.shape[1]
    expected = features.shape[1] * ((n - 1) / n) ** 2  # unbiased std: each diagonal term is (n-1)/n
    assert cross_covariance_loss(features, features).item() == pytest.approx(expected, rel=1e-5)
    assert cross_covariance_loss(features, 3 * features + 1).item() == pytest.approx(expected, rel=1e-5)


def test_cross_covariance_of_decorrelated_features_is_zero():
    features = orthogonal_features(channels=8)
    spectral, spatial = features[:, :4], features[:, 4:]
    assert cross_covariance_loss(spectral, spatial).item() == pytest.approx(0.0, abs=1e-10)


def test_cosine_similarity_loss():
    features = torch.rand(2, 5, 6, 7) + 0.1
    assert cosine_similarity_loss(features, features).item() == pytest.approx(2.0, abs=1e-6)
    assert cosine_similarity_loss(features, -features).item() == pytest.approx(0.0, abs=1e-6)
    a = torch.zeros(1, 2, 3, 3)
    b = torch.zeros(1, 2, 3, 3)
    a[:, 0], b[:, 1] = 1.0, 1.0
    assert cosine_similarity_loss(a, b).item() == pytest.approx(1.0, abs=1e-6)


def test_variance_loss():
    assert variance_loss(torch.zeros(2, 3, 4, 4)).item() == pytest.approx(1.0)
    # per-sample pixel variance 4 in every channel: no variance penalty, only the mean magnitude (2)
    spread = torch.tensor([2.0, -2.0]).repeat(8).reshape(1, 1, 4, 4).expand(2, 3, 4, 4)
    assert spread.flatten(2).var(dim=2).min().item() > 1
    assert variance_loss(spread).item() == pytest.approx(2.0)
    # variance 0.25 in one channel of three: penalty (1 - 0.25) / 3
    half = torch.zeros(1, 3, 4, 4)
    half[0, 0] = torch.tensor([0.5, -0.5]).repeat(8).reshape(4, 4)
    expected = (1 - half[0, 0].var().item()) / 3 + 2 / 3 + half.abs().mean().item()
    assert variance_loss(half).item() == pytest.approx(expected, rel=1e-6)


def test_distillation_alignment_and_ssim_losses():
    maps = [torch.rand(2, 4, 8, 8), torch.rand(2, 6, 4, 4)]
    assert distillation_cosine_loss(maps, maps).item() == pytest.approx(0.0, abs=1e-6)
    assert distillation_cosine_loss(maps, [-m for m in maps]).item() == pytest.approx(4.0, abs=1e-6)
    assert alignment_loss(torch.zeros(3, 1, 2, 2)).item() == pytest.approx(np.log(2.0))
    assert alignment_loss(torch.full((1, 1, 2, 2), -30.0)).item() == pytest.approx(0.0, abs=1e-9)
    image = torch.rand(2, 3, 12, 12)
    assert ssim_loss(image, image).item() == pytest.approx(0.0, abs=1e-5)
    assert ssim_loss(image, torch.rand(2, 3, 12, 12)).item() > 0.1


def test_window_fractions_match_brute_force():
    usable = np.random.default_rng(0).uniform(size=(9, 11)) > 0.3
    fractions = window_fractions(usable, 4)
    assert fractions.shape == (6, 8)
    for top in range(6):
        for left in range(8):
            assert fractions[top, left] == pytest.approx(usable[top:top + 4, left:left + 4].mean())
    assert window_fractions(usable, 12).size == 0


def marked_cube(usable):
    """A cube whose every band is 1 on usable pixels and 0 elsewhere, to see what patches contain."""
    cube = np.repeat(usable[None].astype(np.float32), 3, axis=0)
    return BackgroundCube("marked", cube, usable, (1, 2, 3), "marked")


def test_patch_sampler_honours_masks_and_nodata():
    usable = np.ones((40, 50), dtype=bool)
    usable[10:30, 20:35] = False  # a masked block
    usable[::9, ::11] = False  # scattered nodata
    strict = PatchSampler([marked_cube(usable)], 8, min_usable_fraction=1.0)
    for batch in strict.epoch_batches(seed=0, stage=1, epoch=0, batch_size=8, patches=64):
        assert batch.shape == (8, 3, 8, 8) and batch.dtype == np.float32
        assert (batch == 1).all()
    loose = PatchSampler([marked_cube(usable)], 8)
    for batch in loose.epoch_batches(seed=0, stage=1, epoch=0, batch_size=8, patches=64):
        assert (batch[:, 0].mean(axis=(1, 2)) >= 0.9).all()


def test_patch_draws_depend_only_on_seed_stage_and_epoch():
    rng = np.random.default_rng(1)
    cube = BackgroundCube("random", rng.standard_normal((2, 30, 30)).astype(np.float32), np.ones((30, 30), bool),
                          (1, 2), "random")
    sampler = PatchSampler([cube], 8)
    first = sampler.epoch_batches(seed=5, stage=1, epoch=3, batch_size=4, patches=8)
    again = sampler.epoch_batches(seed=5, stage=1, epoch=3, batch_size=4, patches=8)
    other = sampler.epoch_batches(seed=5, stage=1, epoch=4, batch_size=4, patches=8)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))
    assert sampler.patches_per_epoch(batch_size=4) == 16  # 900 px / 64 px per patch = 15 patches -> 4 batches


def test_patch_sampler_errors():
    small = marked_cube(np.ones((10, 30), bool))
    with pytest.raises(InputError, match="marked is 30x10 px, too small for one 16x16 patch"):
        PatchSampler([small], 16)
    holes = np.ones((20, 20), bool)
    holes[::2] = False
    with pytest.raises(InputError, match=r"no 16x16 window with at least 90% usable pixels \(too much nodata or "
                                         r"masked area; 200 of its 400 pixels are usable\): .*invert a mask"):
        PatchSampler([marked_cube(holes)], 16)


def test_load_background_resamples_then_scales_and_fills_excluded_pixels(tmp_path):
    rng = np.random.default_rng(2)
    data = rng.uniform(100, 1000, (6, 12, 14)).astype(np.int16)
    data[:, 0, 0] = -1  # nodata
    data[:, 5, 5] = 30000  # an extreme valid pixel, later masked: it still sets the scaling, as at detection
    mask = np.zeros((12, 14), np.uint8)
    mask[5, 5] = 1
    path = write_cube(tmp_path / "cube.tif", data, nodata=-1)
    mask_path = write_cube(tmp_path / "mask.tif", mask)
    cube = load_background(TrainingRaster(path, mask_path), model_bands=3)

    assert cube.cube.shape == (3, 12, 14) and cube.band_count == 6
    assert not cube.usable[0, 0] and not cube.usable[5, 5] and cube.usable.sum() == 12 * 14 - 2
    from fers.fers_core.pipeline.preprocess import resample_bands

    valid = np.ones((12, 14), bool)
    valid[0, 0] = False
    resampled = resample_bands(data.astype(np.float32), 3)
    low, high = resampled[:, valid].min(), resampled[:, valid].max()
    expected = ((resampled - low) / (high - low) * 2 - 1) * 0.1
    usable = valid.copy()
    usable[5, 5] = False
    np.testing.assert_allclose(cube.cube[:, usable], expected[:, usable], rtol=1e-5, atol=1e-6)
    mean = expected[:, valid].mean(axis=1)
    np.testing.assert_allclose(cube.cube[:, 0, 0], mean, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(cube.cube[:, 5, 5], mean, rtol=1e-4, atol=1e-6)
    assert "2 px excluded" in cube.description


class RecordingFeedback:
    def __init__(self):
        self.lines = []

    def info(self, message):
        self.lines.append(message)

    warning = info


class TinyTrainer:
    """The trainer interface the loop and the checkpoints need, around one 1x1 convolution."""

    name, number = "spectral", 1

    def __init__(self):
        torch.manual_seed(0)
        self.network = torch.nn.Conv2d(2, 2, 1)
        self.optimizer = torch.optim.Adam(self.network.parameters(), lr=0.1, betas=(0.5, 0.999))

    def modules(self):
        return {"network": self.network}

    def train_mode(self):
        self.network.train()

    def step(self, batch):
        loss = (self.network(batch) - 2 * batch).pow(2).mean() + 1e-3 * torch.randn(()).abs()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return {"loss": float(loss.detach())}


class CancelAfter(RecordingFeedback):
    def __init__(self, batches):
        super().__init__()
        self.batches = batches

    def is_cancelled(self):
        self.batches -= 1
        return self.batches < 0

    def check_cancelled(self):
        if self.is_cancelled():
            raise Cancelled()


@pytest.mark.slow
def test_interrupted_and_resumed_training_equals_an_uninterrupted_run(tmp_path):
    from fers.fers_core.training.loop import LoopSettings, ResumeFile, restore, run_stage

    cube = BackgroundCube("random", np.random.default_rng(3).standard_normal((2, 12, 12)).astype(np.float32),
                          np.ones((12, 12), bool), (1, 2), "random")
    sampler = PatchSampler([cube], 4)
    settings = LoopSettings(epochs=3, batch_size=2, patches_per_epoch=4, seed=7)
    whole = TinyTrainer()
    history = run_stage(whole, sampler, settings)
    assert [entry["epoch"] for entry in history] == [1, 2, 3]

    resume_file = ResumeFile(tmp_path / "run.resume.pt", {"seed": 7})
    interrupted = TinyTrainer()
    with pytest.raises(Cancelled):
        run_stage(interrupted, sampler, settings, CancelAfter(batches=5), resume_file=resume_file)
    checkpoint = resume_file.load()
    assert checkpoint["epochs_done"] == 2
    resumed = TinyTrainer()
    restore(resumed, checkpoint)
    resumed_history = run_stage(resumed, sampler, settings, start_epoch=2, history=checkpoint["history"])
    assert resumed_history == history
    for key, value in whole.network.state_dict().items():
        assert torch.equal(value, resumed.network.state_dict()[key]), key


def test_resume_file_round_trip_and_mismatch(tmp_path):
    from fers.fers_core.training.loop import ResumeFile, restore, resume_path

    path = resume_path(tmp_path / "model.pt")
    assert path.endswith("model.pt.resume.pt")
    trainer = TinyTrainer()
    trainer.network(torch.ones(4, 2, 3, 3)).sum().backward()
    trainer.optimizer.step()
    feedback = RecordingFeedback()
    ResumeFile(path, {"seed": 1, "sizes": (3, 4)}, feedback).save("spectral", 2, trainer, [{"epoch": 1, "loss": 1.0}])

    loaded = ResumeFile(path, {"seed": 1, "sizes": [3, 4]}, feedback).load()
    assert loaded["epochs_done"] == 2 and loaded["history"] == [{"epoch": 1, "loss": 1.0}]
    fresh = TinyTrainer()
    restore(fresh, loaded)
    assert torch.equal(fresh.network.weight, trainer.network.weight)
    assert fresh.optimizer.state_dict()["state"][0]["step"] == 1

    assert ResumeFile(path, {"seed": 2, "sizes": [3, 4]}, feedback).load() is None
    assert "other settings or inputs" in feedback.lines[-1]
    assert ResumeFile(path, {"seed": 1, "sizes": [3, 4]}, feedback, enabled=False).load() is None
    (tmp_path / "model.pt.resume.pt").write_bytes(b"not a checkpoint")
    assert ResumeFile(path, {"seed": 1, "sizes": [3, 4]}, feedback).load() is None
    assert "cannot be read" in feedback.lines[-1]
