"""FERS model files (round trip, every malformed case) and the authors' checkpoint importer."""

import os
import pickle
import re
import stat

import pytest
import torch

from fers.fers_core.enhance.checkpoints import import_authors_checkpoint, load_any_model
from fers.fers_core.enhance.model_file import FORMAT_VERSION, FersModel, load_model, random_init_model, save_model
from fers.fers_core.errors import ModelFileError, OutputError

BANDS = 5


@pytest.fixture(scope="module")
def spectral_model():
    return random_init_model(BANDS, seed=0, branches=("spectral",))


@pytest.fixture()
def saved(tmp_path, spectral_model):
    """Path of a valid spectral-only model file, and its content as a plain dict."""
    path = tmp_path / "model.pt"
    save_model(spectral_model, path)
    return path, torch.load(path, weights_only=True)


def rewrite(path, content):
    torch.save(content, path)
    return path


def assert_same_weights(first, second):
    first, second = first.state_dict(), second.state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[key], second[key]) for key in first)


# --- round trip -------------------------------------------------------------------------------


def test_round_trip_keeps_weights_and_metadata(tmp_path):
    model = random_init_model(BANDS, seed=3)
    model.wavelengths_nm = [450.0, 550.5, 650.0, 750.0, 850.0]
    model.provenance = {"source": "unit test", "scenes": ["a", "b"], "epochs": 2}
    path = tmp_path / "both.pt"
    save_model(model, path)
    loaded = load_model(path)
    assert isinstance(loaded, FersModel)
    assert loaded.bands == BANDS and loaded.wavelengths_nm == model.wavelengths_nm
    assert loaded.provenance == model.provenance and loaded.preprocessing == model.preprocessing
    assert loaded.architecture == {"spectral": {"head_width": 128}, "spatial": {}}
    assert loaded.has_branch("spectral") and loaded.has_branch("spatial")
    for name in ("spectral", "spatial"):
        assert not loaded.branches[name].training
        assert_same_weights(loaded.branches[name], model.branches[name])
    assert [p.name for p in tmp_path.iterdir()] == ["both.pt"], "no temporary file may be left behind"


@pytest.mark.slow
def test_loading_a_model_in_a_fresh_process_stays_light(tmp_path):
    """Building the networks on the meta device must not reach PyTorch's Python reference kernels, whose first
    use imports torch._dynamo (about 1 s of every first detection); the stored tensors still arrive intact."""
    import subprocess
    import sys
    from pathlib import Path

    path = tmp_path / "both.pt"
    save_model(random_init_model(BANDS, seed=4), path)
    root = Path(__file__).resolve().parents[3]
    code = ("import sys, torch; sys.path.insert(0, sys.argv[1]); from fers_core.enhance.model_file import load_model; "
            "model = load_model(sys.argv[2]); weight = model.branches['spatial'].backbone.stem_conv.weight; "
            "print('dynamo' if 'torch._dynamo' in sys.modules else 'light', float(weight.abs().sum()))")
    result = subprocess.run([sys.executable, "-c", code, str(root), str(path)], capture_output=True, text=True,
                            check=True)
    verdict, weight_sum = result.stdout.split()
    stem = random_init_model(BANDS, seed=4).branches["spatial"].backbone.stem_conv.weight.detach()
    expected = float(stem.abs().sum())
    assert verdict == "light"
    assert float(weight_sum) == pytest.approx(expected, rel=1e-6) and expected > 0


def test_saving_over_an_existing_file_replaces_it(tmp_path, spectral_model):
    path = tmp_path / "model.pt"
    path.write_text("old")
    save_model(spectral_model, path)
    assert load_model(path).bands == BANDS


def test_save_refuses_values_that_would_need_pickle(tmp_path, spectral_model):
    model = FersModel(bands=BANDS, branches=spectral_model.branches, provenance={"when": object()})
    with pytest.raises(ModelFileError, match="provenance 'when' holds a object"):
        save_model(model, tmp_path / "model.pt")


# --- random init --------------------------------------------------------------------------------


def test_random_init_is_seeded_per_branch_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    both = random_init_model(BANDS, seed=0)
    assert torch.equal(torch.rand(1), expected_next)
    alone = random_init_model(BANDS, seed=0, branches=("spectral",))
    assert_same_weights(both.branches["spectral"], alone.branches["spectral"])
    other = random_init_model(BANDS, seed=1, branches=("spectral",))
    assert not torch.equal(other.branches["spectral"].convh.weight, alone.branches["spectral"].convh.weight)
    bn = alone.branches["spectral"].encoder.layer1[0].bn1
    assert torch.equal(bn.running_mean, torch.zeros(128)) and torch.equal(bn.running_var, torch.ones(128))
    assert both.provenance["seed"] == 0 and "random" in both.provenance["source"]


# --- malformed files: one specific message each ---------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match="does not exist"):
        load_model(tmp_path / "absent.pt")


def test_truncated_file(saved):
    path, _ = saved
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="damaged or incomplete"):
        load_model(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    with pytest.raises(ModelFileError, match="is empty"):
        load_model(path)


def test_text_file(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("these are not weights\n")
    with pytest.raises(ModelFileError, match="not a PyTorch file"):
        load_model(path)


class WritesMarkerWhenUnpickled:
    """Unpickling this object would create a file: a stand-in for malicious code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_file_needing_pickle_is_refused_without_running_it(tmp_path, writer):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    payload = {"format": "fers-model", "trap": WritesMarkerWhenUnpickled(marker)}
    if writer == "torch":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=4))
    assert not marker.exists()
    with pytest.raises(ModelFileError, match="was refused and not loaded because it holds Python objects"):
        load_model(path)
    assert not marker.exists(), "loading must never execute code from the file"


def test_wrong_format_name(saved):
    path, content = saved
    content["format"] = "other-model"
    with pytest.raises(ModelFileError, match="unknown format 'other-model'"):
        load_model(rewrite(path, content))


def test_a_preprocessing_this_version_does_not_apply_is_refused(saved):
    """It was stored and never read: a model asking for another scaling ran with the default one, silently."""
    path, content = saved
    content["preprocessing"] = {"band_mapping": "resample_linear", "scaling": "zscore"}
    with pytest.raises(ModelFileError, match="asks for the scaling 'zscore', which this version of FERS does not "
                                             "apply \\(it applies 'minmax_pm1_x0.1'\\)"):
        load_model(rewrite(path, content))


def test_a_preprocessing_step_this_version_does_not_know_is_refused(saved):
    """An extra step (a model made by a later version, say) would be skipped silently."""
    path, content = saved
    content["preprocessing"] = {**content["preprocessing"], "spectral_smoothing": "savgol_7"}
    with pytest.raises(ModelFileError, match="asks for the preprocessing step 'spectral_smoothing', which this "
                                             "version of FERS does not know \\(it applies band_mapping, scaling "
                                             "only\\)"):
        load_model(rewrite(path, content))


def test_plain_torch_file_that_is_not_a_model(tmp_path):
    path = rewrite(tmp_path / "weights.pt", {"weight": torch.zeros(3)})
    with pytest.raises(ModelFileError, match="not a FERS model file"):
        load_model(path)


def test_unsupported_version(saved):
    path, content = saved
    content["format_version"] = FORMAT_VERSION + 1
    with pytest.raises(ModelFileError, match=f"format version {FORMAT_VERSION + 1}, but this plugin reads"):
        load_model(rewrite(path, content))


def test_missing_tensor(saved):
    path, content = saved
    del content["state_dicts"]["spectral"]["encoder.layer1.1.conv2.weight"]
    with pytest.raises(ModelFileError, match="lacks 1 tensor.*encoder.layer1.1.conv2.weight"):
        load_model(rewrite(path, content))


def test_unexpected_tensor(saved):
    path, content = saved
    content["state_dicts"]["spectral"]["extra.weight"] = torch.zeros(2)
    with pytest.raises(ModelFileError, match="1 unexpected tensor.*extra.weight"):
        load_model(rewrite(path, content))


def test_shape_mismatch(saved):
    path, content = saved
    content["state_dicts"]["spectral"]["pixel_head.conv1.weight"] = torch.zeros(64, 256, 1, 1)
    expected = r"'pixel_head.conv1.weight'.*shape \(64, 256, 1, 1\).*needs \(128, 256, 1, 1\)"
    with pytest.raises(ModelFileError, match=expected):
        load_model(rewrite(path, content))


def test_band_count_inconsistent_with_tensors(saved):
    path, content = saved
    content["bands"] = BANDS + 2
    with pytest.raises(ModelFileError, match=f"tensors for {BANDS} bands but the model declares {BANDS + 2}"):
        load_model(rewrite(path, content))


def test_branch_listed_without_tensors(saved):
    path, content = saved
    content["branches"] = ["spectral", "spatial"]
    with pytest.raises(ModelFileError, match="lists the spatial branch but holds no tensors"):
        load_model(rewrite(path, content))


def test_non_finite_weights(saved):
    path, content = saved
    content["state_dicts"]["spectral"]["convh.weight"][0, 0] = float("nan")
    with pytest.raises(ModelFileError, match="NaN or infinite"):
        load_model(rewrite(path, content))


# --- the authors' checkpoint folders --------------------------------------------------------


def write_authors_folder(folder, model):
    """Write ``model``'s spectral branch in the authors' layout (convh.pt, enc.pt, pc.pt)."""
    folder.mkdir()
    state = model.branches["spectral"].state_dict()
    layout = (
        ("convh.pt", "convh.", ""),
        ("enc.pt", "encoder.", "encoder."),
        ("pc.pt", "pixel_head.", "pixel_head."),
    )
    for file_name, selected, stripped in layout:
        part = {key[len(stripped):]: value for key, value in state.items() if key.startswith(selected)}
        torch.save({"state_dict": part}, folder / file_name)
    return folder


def reference_spatial_state_dict(bands):
    """Random tensors under the key names of the reference ``HyperSpatialResNet`` (spa_fen.pt).

    Written from the reference structure, independently of the importer's mapping table.
    """
    generator = torch.Generator().manual_seed(0)
    state = {}

    def conv(key, out_channels, in_channels, kernel, bias=False):
        state[f"{key}.weight"] = torch.randn(out_channels, in_channels, kernel, kernel, generator=generator)
        if bias:
            state[f"{key}.bias"] = torch.randn(out_channels, generator=generator)

    def bn(key, channels):
        for name in ("weight", "bias", "running_mean"):
            state[f"{key}.{name}"] = torch.randn(channels, generator=generator)
        state[f"{key}.running_var"] = torch.rand(channels, generator=generator) + 0.5
        state[f"{key}.num_batches_tracked"] = torch.tensor(7)

    conv("initial_conv.conv", 256, bands, 1, bias=True)
    conv("initial_conv.hidden", 3, 256, 1, bias=True)
    conv("get_features.0", 64, 3, 7)
    bn("get_features.1", 64)
    in_channels = 64
    for index, (channels, blocks) in zip((4, 5, 6), ((64, 3), (128, 4), (256, 6))):
        for block in range(blocks):
            key = f"get_features.{index}.{block}"
            conv(f"{key}.conv1", channels, in_channels if block == 0 else channels, 3)
            bn(f"{key}.bn1", channels)
            conv(f"{key}.conv2", channels, channels, 3)
            bn(f"{key}.bn2", channels)
            if block == 0 and in_channels != channels:
                conv(f"{key}.downsample.0", channels, in_channels, 1)
                bn(f"{key}.downsample.1", channels)
        in_channels = channels
    conv("spp.fuse.0", 128, 768, 1)
    conv("spp.fuse.2", bands, 128, 1)
    conv("spp.se.fc.0", max(1, bands // 8), bands, 1)
    conv("spp.se.fc.2", bands, max(1, bands // 8), 1)
    return state


def test_import_authors_folder_round_trips_the_spectral_tensors(tmp_path, spectral_model):
    folder = write_authors_folder(tmp_path / "my-checkpoint", spectral_model)
    imported = import_authors_checkpoint(folder)
    assert imported.bands == BANDS and list(imported.branches) == ["spectral"]
    assert "imported from the FERS authors' checkpoint folder my-checkpoint" in imported.provenance["source"]
    assert_same_weights(imported.branches["spectral"], spectral_model.branches["spectral"])
    assert load_any_model(folder).bands == BANDS
    save_model(imported, tmp_path / "imported.pt")
    reloaded = load_any_model(tmp_path / "imported.pt")
    assert_same_weights(reloaded.branches["spectral"], spectral_model.branches["spectral"])


def test_import_maps_the_reference_spatial_names(tmp_path, spectral_model):
    folder = write_authors_folder(tmp_path / "with-spatial", spectral_model)
    reference = reference_spatial_state_dict(BANDS)
    torch.save({"state_dict": reference}, folder / "spa_fen.pt")
    spatial = import_authors_checkpoint(folder).branches["spatial"]
    ours = spatial.state_dict()
    assert len(ours) == len(reference)
    assert torch.equal(spatial.false_colour.expand.bias, reference["initial_conv.conv.bias"])
    assert torch.equal(spatial.backbone.stem_conv.weight, reference["get_features.0.weight"])
    assert torch.equal(spatial.backbone.layer3[0].downsample[1].running_var,
                       reference["get_features.6.0.downsample.1.running_var"])
    assert torch.equal(spatial.head.expand.weight, reference["spp.fuse.2.weight"])
    assert torch.equal(spatial.head.gate.excite.weight, reference["spp.se.fc.2.weight"])
    stored = sorted(value.sum().item() for value in reference.values())
    assert sorted(value.sum().item() for value in ours.values()) == stored


def test_import_reports_missing_files(tmp_path, spectral_model):
    folder = write_authors_folder(tmp_path / "partial", spectral_model)
    (folder / "pc.pt").unlink()
    with pytest.raises(ModelFileError, match="lacks pc.pt; it needs convh.pt, enc.pt and pc.pt"):
        import_authors_checkpoint(folder)
    with pytest.raises(ModelFileError, match="does not exist"):
        import_authors_checkpoint(tmp_path / "nowhere")


def test_import_reports_files_of_different_models(tmp_path, spectral_model):
    folder = write_authors_folder(tmp_path / "mixed", spectral_model)
    torch.save({"state_dict": {"convh.weight": torch.zeros(64, BANDS + 1, 1, 1)}}, folder / "convh.pt")
    with pytest.raises(ModelFileError, match=f"convh.pt is for {BANDS + 1} bands but pc.pt is for {BANDS}"):
        import_authors_checkpoint(folder)


def test_one_authors_file_given_instead_of_the_folder(tmp_path, spectral_model):
    folder = write_authors_folder(tmp_path / "ckpt", spectral_model)
    with pytest.raises(ModelFileError, match="choose the folder instead"):
        load_any_model(folder / "enc.pt")



def test_text_subclasses_are_refused_and_files_are_world_readable(tmp_path):
    class Version(str):
        pass

    model = random_init_model(8, seed=0, branches=("spectral",))
    model.provenance["torch"] = Version("2.13.0")  # like torch.__version__: loading it would need pickle
    with pytest.raises(ModelFileError, match="holds a Version"):
        save_model(model, tmp_path / "bad.pt")
    model.provenance["torch"] = "2.13.0"
    previous = os.umask(0o022)
    try:
        save_model(model, tmp_path / "good.pt")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "good.pt").stat().st_mode) == 0o644
    assert load_model(tmp_path / "good.pt").provenance["torch"] == "2.13.0"


@pytest.mark.parametrize("name", ["README", "scene.tif", "model.txt", "model"])
def test_a_model_is_written_only_to_a_pt_file(tmp_path, spectral_model, name):
    (tmp_path / name).write_bytes(b"keep me")
    with pytest.raises(OutputError, match=rf"^The model file '.*{re.escape(name)}' does not end in \.pt: FERS model "
                                          r"files are PyTorch files named \*\.pt; give e\.g\. '"):
        save_model(spectral_model, tmp_path / name)
    assert (tmp_path / name).read_bytes() == b"keep me"


def test_saving_creates_the_folder_and_refuses_an_input(tmp_path, spectral_model):
    save_model(spectral_model, tmp_path / "new" / "deeper" / "m.pt")
    assert load_any_model(tmp_path / "new" / "deeper" / "m.pt").bands == BANDS
    folder = write_authors_folder(tmp_path / "ckpt", spectral_model)
    before = (folder / "pc.pt").read_bytes()
    with pytest.raises(OutputError, match="is the same file as the checkpoint folder"):
        save_model(spectral_model, folder / "pc.pt", inputs=[("the checkpoint folder", folder)])
    assert (folder / "pc.pt").read_bytes() == before


def test_import_names_a_value_that_is_not_a_tensor(tmp_path, spectral_model):
    folder = write_authors_folder(tmp_path / "odd", spectral_model)
    torch.save({"state_dict": {"conv1.weight": 3}}, folder / "pc.pt")
    with pytest.raises(ModelFileError, match=r"pc.pt holds 'conv1.weight' as int, not a tensor; it is not a FERS "
                                             "authors' checkpoint file"):
        import_authors_checkpoint(folder)


def test_a_checkpoint_file_that_is_not_pytorch_says_to_get_the_folder_again(tmp_path, spectral_model):
    folder = write_authors_folder(tmp_path / "damaged", spectral_model)
    (folder / "enc.pt").write_bytes(b"\x00\x01 random bytes")
    with pytest.raises(ModelFileError, match=r"^enc.pt in the checkpoint folder .*damaged is not a PyTorch file "
                                             r"\(damaged, or not one of the FERS authors' files\): download"):
        import_authors_checkpoint(folder)
