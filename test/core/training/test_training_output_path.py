"""fers:train's default model file (fers_core.training.output_path): a real file, never replacing a model."""

from fers.fers_core.training.output_path import default_model_output

from ...conftest import read_only_folder


def test_default_is_beside_the_first_input_named_after_it(tmp_path):
    assert default_model_output(tmp_path / "site.tif", tmp_path / "profile") == str(tmp_path / "site_fers_model.pt")
    assert not (tmp_path / "profile").exists()  # the fallback is only created when it is used


def test_an_existing_model_is_never_replaced(tmp_path):
    (tmp_path / "site_fers_model.pt").write_bytes(b"model")
    (tmp_path / "site_fers_model_2.pt").write_bytes(b"model")
    assert default_model_output(tmp_path / "site.tif", tmp_path) == str(tmp_path / "site_fers_model_3.pt")


def test_an_interrupted_run_is_found_again_for_resume(tmp_path):
    """An interrupted run leaves <model>.resume.pt and no model: the next default run picks the same name."""
    (tmp_path / "site_fers_model.pt").write_bytes(b"finished model")
    (tmp_path / "site_fers_model_2.pt.resume.pt").write_bytes(b"checkpoint")
    assert default_model_output(tmp_path / "site.tif", tmp_path) == str(tmp_path / "site_fers_model_2.pt")


def test_a_read_only_input_folder_falls_back_to_the_profile_folder(tmp_path):
    data, release = read_only_folder(tmp_path, "data")
    try:
        fallback = tmp_path / "profile" / "fers" / "models"
        assert default_model_output(data / "site.tif", fallback) == str(fallback / "site_fers_model.pt")
        assert fallback.is_dir()
    finally:
        release()
