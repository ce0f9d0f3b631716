"""What a FERS detection run is asked to do (its options), the log's words for its fusion, and its summary."""

import os
from dataclasses import dataclass, field

from ..choices import BRANCH_CHOICES, Fusion, Precision
from ..errors import InputError
from ..io.reader import nodata_values
from ..io.tile_settings import SPATIAL_MARGIN, SPATIAL_TILE
from ..io.windows import DEFAULT_BLOCK_MB


@dataclass(frozen=True)
class DetectOptions:
    """Settings of one detection run (defaults are the documented ones).

    Frozen: a run resolves what it was asked (branches the model has, the precision) into a copy
    (dataclasses.replace), so the caller's options never change and a plan sent to Dask workers is
    the one the run uses. `fusion` and `precision` take a member or its string.
    """

    bands: list = None
    mask_path: str = None
    nodata: tuple = ()  # values that are nodata in every band besides the raster's own (RasterReader's extra nodata)
    branches: tuple = BRANCH_CHOICES[0]
    fusion: Fusion = Fusion.REFERENCE  # asked for; Fusion.resolve says what the run does
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
    precision: Precision = Precision.AUTO  # network arithmetic (enhance.precision.resolve_precision)
    spill: bool = True  # keep the statistics pass's enhanced cubes in a temporary file for the score pass
    report_bands: bool = True  # log bad bands left out and sparse band interpolation (an ensemble: once for all)

    def __post_init__(self):
        if isinstance(self.branches, str):
            raise InputError(f"Branches are a tuple of branch names, e.g. ('spectral',), not '{self.branches}'.")
        object.__setattr__(self, "branches", tuple(self.branches))
        object.__setattr__(self, "nodata", nodata_values(self.nodata))
        object.__setattr__(self, "fusion", Fusion.parse(self.fusion))
        object.__setattr__(self, "precision", Precision.parse(self.precision))


@dataclass
class DetectSummary:
    output_path: str
    branches: tuple
    fusion: Fusion  # what the run did: SUM, PRODUCT or SINGLE
    device: str
    valid_pixels: int
    seconds: dict = field(default_factory=dict)
    rank: int = None  # global RX on one enhanced cube: its covariance's rank, the chi-square law's degrees of freedom


FUSION_NAMES = {Fusion.REFERENCE: "As the reference", Fusion.SUM: "Sum", Fusion.PRODUCT: "Product"}


def describe_fusion(choice: Fusion, fusion: Fusion, model_bands: int) -> str:
    """The log's words for the FUSION choice and what it became, e.g. 'As the reference (product at 50 model bands)'."""
    if fusion is Fusion.SINGLE:
        return "none (one branch)"
    if choice is Fusion.REFERENCE:
        return f"As the reference ({fusion} at {model_bands} model bands)"
    return FUSION_NAMES[choice]


def extra_outputs(options, networks, feedback):
    """{branch: path} of the enhanced cubes to write; warns about those no branch computes."""
    extra = {}
    for name, path in (("spectral", options.spectral_output), ("spatial", options.spatial_output)):
        if path and name in networks:
            extra[name] = path
        elif path:
            feedback.warning(f"No {name} features were computed, so {os.path.basename(path)} is not written.")
    return extra
