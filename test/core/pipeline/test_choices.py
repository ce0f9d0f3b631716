"""The run's choices (choices.py) and its frozen options: one enum each for fusion and precision, resolved
once per run into a copy; the caller's DetectOptions never change."""

import dataclasses

import pytest

from fers.fers_core import choices
from fers.fers_core.choices import EnsembleFusion, Fusion, Precision
from fers.fers_core.errors import InputError
from fers.fers_core.pipeline.options import DetectOptions, describe_fusion


def test_fusion_resolves_by_the_reference_rule_and_keeps_its_outside_names():
    assert [str(fusion) for fusion in choices.FUSION_CHOICES] == ["reference", "sum", "product"]
    assert Fusion.REFERENCE.resolve(50, ("spectral", "spatial")) is Fusion.PRODUCT
    assert Fusion.REFERENCE.resolve(51, ("spectral", "spatial")) is Fusion.SUM
    assert Fusion.PRODUCT.resolve(200, ("spectral", "spatial")) is Fusion.PRODUCT
    assert Fusion.SUM.resolve(16, ("spectral", "spatial")) is Fusion.SUM
    assert Fusion.PRODUCT.resolve(16, ("spatial",)) is Fusion.SINGLE
    # the score raster's fers_fusion metadata and the log read the member as its string
    assert f"{Fusion.PRODUCT}" == "product" and Fusion.SUM == "sum"
    assert describe_fusion(Fusion.REFERENCE, Fusion.PRODUCT, 50) == "As the reference (product at 50 model bands)"
    assert describe_fusion(Fusion.SUM, Fusion.SUM, 50) == "Sum"
    assert describe_fusion(Fusion.PRODUCT, Fusion.SINGLE, 50) == "none (one branch)"


def test_options_take_a_member_or_its_string_and_refuse_anything_else():
    options = DetectOptions(fusion="product", precision="float32", branches=["spectral"])
    assert options.fusion is Fusion.PRODUCT and options.precision is Precision.FLOAT32
    assert options.branches == ("spectral",)
    assert DetectOptions().fusion is Fusion.REFERENCE and DetectOptions().precision is Precision.AUTO
    assert [str(precision) for precision in choices.PRECISION_CHOICES] == ["float32", "bfloat16", "auto"]
    with pytest.raises(InputError, match="Unknown fusion '2': use one of reference, sum, product"):
        DetectOptions(fusion=2)
    with pytest.raises(InputError, match="Unknown fusion 'single'"):
        DetectOptions(fusion=Fusion.SINGLE)  # what a run does with one branch, not a choice
    with pytest.raises(InputError, match="Unknown precision 'half'"):
        DetectOptions(precision="half")
    assert [str(fusion) for fusion in choices.ENSEMBLE_FUSION_CHOICES] == ["rank", "standardised"]
    assert EnsembleFusion.parse("standardised") is EnsembleFusion.STANDARDISED
    with pytest.raises(InputError, match="Unknown ensemble fusion 'median': use one of rank, standardised"):
        EnsembleFusion.parse("median")


def test_options_are_frozen():
    options = DetectOptions()
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.precision = Precision.FLOAT32
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.branches = ("spectral",)
    assert dataclasses.replace(options, fusion="sum").fusion is Fusion.SUM


def test_a_run_leaves_the_callers_options_as_they_were(tmp_path):
    """The run resolves the branches the model has and the precision into its own copy."""
    from fers.fers_core.enhance.model_file import random_init_model
    from fers.fers_core.feedback import Feedback
    from fers.fers_core.pipeline.detect import prepare_detection, run_fers_detection
    from fers.fers_core.synthetic import write_scene

    source, _ = write_scene(tmp_path / "scene.tif", tmp_path / "truth.tif", rows=40, cols=44, bands=12, seed=5)
    model = random_init_model(8, seed=0, branches=("spectral",))
    options = DetectOptions(device="cpu", spatial_tile=16, spatial_margin=2)
    before = dataclasses.replace(options)
    summary = run_fers_detection(source, str(tmp_path / "scores.tif"), model, options)
    assert options == before and options.precision is Precision.AUTO
    assert options.branches == ("spectral", "spatial")
    assert summary.branches == ("spectral",) and summary.fusion is Fusion.SINGLE
    setup = prepare_detection(source, model, options, Feedback())
    try:
        assert setup.options.branches == ("spectral",)
        assert setup.options.precision in (Precision.FLOAT32, Precision.MIXED)  # resolved, never AUTO
        assert options == before
    finally:
        setup.reader.close()
