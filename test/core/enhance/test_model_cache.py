"""The detection model cache: one load per unchanged file, a fresh load when the file changes."""

import os

import pytest
import torch

from fers.fers_core.enhance import model_cache
from fers.fers_core.enhance.model_file import random_init_model, save_model
from fers.fers_core.errors import ModelFileError


@pytest.fixture(autouse=True)
def empty_cache():
    model_cache.clear()
    yield
    model_cache.clear()


@pytest.fixture()
def model_path(tmp_path):
    path = tmp_path / "model.pt"
    save_model(random_init_model(5, seed=0), path)
    return path


def test_an_unchanged_file_is_loaded_once(model_path):
    first = model_cache.detection_model(model_path)
    assert model_cache.detection_model(str(model_path)) is first
    network = model_cache.inference_network(first, "spectral", "cpu", False)
    assert model_cache.inference_network(first, "spectral", "cpu", False) is network
    assert model_cache.inference_network(first, "spectral", "cpu", True) is not network


def test_a_rewritten_file_is_loaded_again(model_path):
    first = model_cache.detection_model(model_path)
    save_model(random_init_model(5, seed=1), model_path)
    stat = model_path.stat()
    os.utime(model_path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a new time even on coarse clocks
    second = model_cache.detection_model(model_path)
    assert second is not first
    weight = "convh.weight"
    assert not torch.equal(first.branches["spectral"].state_dict()[weight],
                           second.branches["spectral"].state_dict()[weight])


def test_models_not_from_the_cache_get_fresh_inference_networks():
    model = random_init_model(5, seed=0)
    assert (model_cache.inference_network(model, "spatial", "cpu", False)
            is not model_cache.inference_network(model, "spatial", "cpu", False))


def test_only_the_latest_models_are_kept(tmp_path):
    paths = []
    for seed in range(model_cache.MAX_MODELS + 1):
        paths.append(tmp_path / f"model{seed}.pt")
        save_model(random_init_model(5, seed=seed, branches=("spectral",)), paths[-1])
    models = [model_cache.detection_model(path) for path in paths]
    assert model_cache.detection_model(paths[-1]) is models[-1]
    assert model_cache.detection_model(paths[0]) is not models[0]  # the oldest was let go


def test_a_missing_file_gets_the_loader_error(tmp_path):
    with pytest.raises(ModelFileError, match="does not exist"):
        model_cache.detection_model(tmp_path / "missing.pt")


def test_the_bundled_default_and_one_more_model_fit_the_cache(tmp_path):
    """The default ensemble loads its three models in a fixed order: a cache smaller than that evicts each one
    just before the next run needs it, and every run reads all three files again."""
    from fers.fers_core.enhance.default_model import DEFAULT_MEMBER_FILES, default_model_path

    other = tmp_path / "own.pt"
    save_model(random_init_model(5, seed=0, branches=("spectral",)), other)
    default = [default_model_path(), *DEFAULT_MEMBER_FILES]
    first = [model_cache.detection_model(path) for path in [*default, other]]
    second = [model_cache.detection_model(path) for path in [*default, other]]
    assert all(again is model for again, model in zip(second, first))
