"""Background patches for training, preprocessed exactly as detection preprocesses a raster.

Each training raster goes through the band mapping and scaling of :mod:`fers_core.pipeline.scaling`, in the
same order as at detection: the selected bands of valid pixels are resampled to the model's bands, the raster's
minimum and maximum of the *resampled* valid pixels fix the reference scaling, and invalid pixels
are filled with the raster's mean spectrum. The scaled cube is kept in memory (rows x cols x model
bands x 4 bytes per raster, at most ``MAX_CUBE_BYTES``).

A pixel is *usable* for training when it is valid (not nodata, NaN or inf in any used band) and not
excluded by the raster's mask (non-zero = exclude); the others are filled with the mean spectrum,
as invalid pixels are at detection, so masked targets never reach a patch. Patches are square
windows of which at least ``MIN_USABLE_FRACTION`` of the pixels are usable, drawn uniformly over
such windows, rasters weighted by their usable pixels, with random flips and 90-degree rotations;
the draw of epoch ``e`` depends only on (seed, stage, e), so a resumed run sees the same patches as
an uninterrupted one.
"""

import os
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..feedback import Feedback, ProgressRange
from ..io.bad_bands import explain_no_valid_pixels, report_band_selection
from ..io.fill_values import report_fill_values
from ..io.grid import read_mask
from ..io.reader import RasterReader
from ..io.windows import strips
from ..pipeline.scaling import BandMapping, fit_scaling, range_pass, scale_window

MIN_USABLE_FRACTION = 0.9
STRIP_ROWS = 256
MAX_CUBE_BYTES = 4 * 2**30


@dataclass(frozen=True)
class TrainingRaster:
    """One training input: raster path, optional exclusion mask, optional 1-based band numbers and extra nodata
    values (RasterReader's)."""

    path: str
    mask_path: str | None = None
    bands: list[int] | None = None  # 1-based band numbers; None = every band
    nodata: tuple = ()


@dataclass
class BackgroundCube:
    """A preprocessed training raster: scaled model-band cube and its usable-pixel map."""

    name: str
    cube: np.ndarray
    usable: np.ndarray
    bands: tuple  # the raster's band numbers used (its default selection resolved)
    description: str

    @property
    def band_count(self):
        return len(self.bands)

    @property
    def usable_pixels(self):
        return int(self.usable.sum())


def load_background(raster: TrainingRaster, model_bands: int, wavelengths_nm: list = None, feedback: Feedback = None,
                    progress=None) -> BackgroundCube:
    """Read, resample and scale one :class:`TrainingRaster`; returns a :class:`BackgroundCube`."""
    feedback = feedback or Feedback()
    name = os.path.basename(str(raster.path))
    reader = RasterReader(raster.path, raster.bands, nodata=raster.nodata)
    report_band_selection(reader, feedback, name)
    report_fill_values(reader, feedback, name)
    try:
        mask = read_mask(raster.mask_path, reader) if raster.mask_path else None
    except InputError as error:
        raise _named(error, name) from None
    model_bands = int(model_bands)
    needed = reader.width * reader.height * model_bands * 4
    if needed > MAX_CUBE_BYTES:
        raise InputError(
            f"{name} ({reader.width}x{reader.height} px) needs {needed / 2**30:.1f} GiB in memory at {model_bands} "
            f"model bands, more than the {MAX_CUBE_BYTES // 2**30} GiB allowed per training raster: clip it to "
            "smaller background areas first."
        )
    mapping = BandMapping(reader.band_count, model_bands, reader.wavelengths_nm, wavelengths_nm, feedback,
                          list(reader.bands))
    windows = strips(reader.width, reader.height, STRIP_ROWS)
    try:
        with explain_no_valid_pixels(raster.path, raster.bands, feedback, raster.nodata):
            scaling = fit_scaling(range_pass(reader, mapping, windows, progress or (lambda fraction: None)))
    except InputError as error:
        raise _named(error, name) from None
    cube = np.empty((model_bands, reader.height, reader.width), dtype=np.float32)
    usable = np.empty((reader.height, reader.width), dtype=bool)
    for window in windows:
        rows = window.row_span.as_slice()
        cube[:, rows], usable[rows] = scale_window(reader, mapping, scaling, window)
        if mask is not None:
            usable[rows] &= mask.read(window)[0][0] == 0
    cube[:, ~usable] = scaling.fill.astype(np.float32)[:, None]
    excluded = f", {int((~usable).sum())} px excluded (nodata or mask)" if not usable.all() else ""
    description = f"{name}: {reader.width}x{reader.height} px, {mapping.description}{excluded}"
    return BackgroundCube(name, cube, usable, tuple(reader.bands), description)


def _named(error, name):
    """`error` as an InputError that names the training raster (prefixed unless its message names it already)."""
    return InputError(str(error) if f"'{name}'" in str(error) else f"{name}: {error}")


def load_backgrounds(rasters: list, model_bands: int, wavelengths_nm: list = None, feedback: Feedback = None,
                     progress=None) -> list:
    """Load every training raster (progress over all of them); a list of :class:`BackgroundCube`."""
    feedback = feedback or Feedback()
    progress = progress or ProgressRange(feedback, 0, 100)
    cubes = []
    for index, raster in enumerate(rasters):
        cube = load_background(raster, model_bands, wavelengths_nm, feedback,
                               lambda fraction, i=index: progress((i + fraction) / len(rasters)))
        feedback.info(f"Training raster {cube.description}.")
        cubes.append(cube)
    return cubes


def window_fractions(usable, size):
    """Fraction of usable pixels in every ``size`` x ``size`` window, indexed by its top-left corner."""
    rows, cols = usable.shape
    if rows < size or cols < size:
        return np.zeros((0, 0))
    table = np.zeros((rows + 1, cols + 1), dtype=np.int64)
    table[1:, 1:] = np.cumsum(np.cumsum(usable, axis=0), axis=1)
    counts = table[size:, size:] - table[:-size, size:] - table[size:, :-size] + table[:-size, :-size]
    return counts / float(size * size)


class PatchSampler:
    """Draws batches of background patches (B, bands, size, size) float32 from preprocessed cubes."""

    def __init__(self, cubes, patch_size, min_usable_fraction=MIN_USABLE_FRACTION):
        self.cubes = list(cubes)
        self.patch_size = int(patch_size)
        self.positions = []
        for cube in self.cubes:
            fractions = window_fractions(cube.usable, self.patch_size)
            top, left = np.nonzero(fractions >= min_usable_fraction)
            rows, cols = cube.usable.shape
            if top.size == 0:
                if rows < self.patch_size or cols < self.patch_size:
                    raise InputError(
                        f"{cube.name} is {cols}x{rows} px, too small for one {self.patch_size}x{self.patch_size} "
                        "patch: lower PATCH_SIZE or leave this raster out."
                    )
                raise InputError(
                    f"{cube.name} has no {self.patch_size}x{self.patch_size} window with at least "
                    f"{min_usable_fraction:.0%} usable pixels (too much nodata or masked area; {cube.usable_pixels} "
                    f"of its {rows * cols} pixels are usable): lower PATCH_SIZE, shrink the mask (non-zero = left "
                    "out; invert a mask that marks the background) or leave this raster out."
                )
            self.positions.append(np.stack([top, left], axis=1))
        pixels = np.array([cube.usable_pixels for cube in self.cubes], dtype=np.float64)
        self.weights = pixels / pixels.sum()

    @property
    def usable_pixels(self):
        return int(sum(cube.usable_pixels for cube in self.cubes))

    def patches_per_epoch(self, batch_size):
        """Patches that cover the usable pixels about once, in whole batches (at least one)."""
        patches = int(np.ceil(self.usable_pixels / float(self.patch_size ** 2)))
        return max(1, int(np.ceil(patches / batch_size))) * batch_size

    def epoch_batches(self, seed, stage, epoch, batch_size, patches):
        """The batches of one epoch: a list of float32 arrays, fully determined by (seed, stage, epoch)."""
        rng = np.random.default_rng([int(seed), int(stage), int(epoch)])
        samples = [self.sample(rng) for _ in range(patches)]
        return [np.stack(samples[start:start + batch_size]) for start in range(0, patches, batch_size)]

    def sample(self, rng):
        """One patch: a random cube (weighted by usable pixels), position, flip and rotation."""
        index = int(rng.choice(len(self.cubes), p=self.weights))
        top, left = self.positions[index][int(rng.integers(len(self.positions[index])))]
        size = self.patch_size
        patch = self.cubes[index].cube[:, top:top + size, left:left + size]
        if rng.integers(2):
            patch = patch[:, :, ::-1]
        patch = np.rot90(patch, k=int(rng.integers(4)), axes=(1, 2))
        return np.ascontiguousarray(patch, dtype=np.float32)
