"""What a FERS detection run is asked to do: its options, branch and fusion choices, and its summary."""

import os
from dataclasses import dataclass, field

from ..io.raster_io import DEFAULT_BLOCK_MB
from ..io.tile_settings import SPATIAL_MARGIN, SPATIAL_TILE

BRANCH_CHOICES = {0: ("spectral", "spatial"), 1: ("spectral",), 2: ("spatial",)}


FUSION_REFERENCE, FUSION_SUM, FUSION_PRODUCT = 0, 1, 2


PRODUCT_FUSION_MAX_BANDS = 50


@dataclass
class DetectOptions:
    """Settings of one detection run (defaults are the documented ones)."""

    bands: list = None
    mask_path: str = None
    branches: tuple = ("spectral", "spatial")
    fusion: int = FUSION_REFERENCE
    device: str = "auto"
    block_mb: int = DEFAULT_BLOCK_MB
    spatial_tile: int = SPATIAL_TILE
    spatial_margin: int = SPATIAL_MARGIN
    spectral_output: str = None
    spatial_output: str = None
    threads: int = 0  # PyTorch intra-op threads for the networks; 0 = PyTorch's default
    detector: str = "global"  # one of detectors.DETECTORS: global RX, local (dual-window) RX or an RX variant
    window_inner: int = 5
    window_outer: int = 21
    precision: str = "auto"  # network arithmetic, one of PRECISIONS (see resolve_precision)
    spill: bool = True  # keep the statistics pass's enhanced cubes in a temporary file for the score pass


@dataclass
class DetectSummary:
    output_path: str
    branches: tuple
    fusion: str
    device: str
    valid_pixels: int
    seconds: dict = field(default_factory=dict)


def choose_fusion(fusion, model_bands, branches):
    """'single', 'sum' or 'product' for the given FUSION choice and branches."""
    if len(branches) == 1:
        return "single"
    if fusion == FUSION_SUM:
        return "sum"
    if fusion == FUSION_PRODUCT:
        return "product"
    return "product" if model_bands <= PRODUCT_FUSION_MAX_BANDS else "sum"


FUSION_NAMES = {FUSION_REFERENCE: "As the reference", FUSION_SUM: "Sum", FUSION_PRODUCT: "Product"}


def describe_fusion(choice, fusion, model_bands):
    """The log's words for the FUSION choice and what it became, e.g. 'As the reference (product at 50 model bands)'."""
    if fusion == "single":
        return "none (one branch)"
    if choice == FUSION_REFERENCE:
        return f"As the reference ({fusion} at {model_bands} model bands)"
    return FUSION_NAMES.get(choice, str(fusion))


def extra_outputs(options, networks, feedback):
    """{branch: path} of the enhanced cubes to write; warns about those no branch computes."""
    extra = {}
    for name, path in (("spectral", options.spectral_output), ("spatial", options.spatial_output)):
        if path and name in networks:
            extra[name] = path
        elif path:
            feedback.warning(f"No {name} features were computed, so {os.path.basename(path)} is not written.")
    return extra
