"""FERS detection over a raster: band mapping, scaling, learned features, global RX.

Passes over the raster (each streamed in strips, so memory follows the strip size):
1. range: resample the bands of valid pixels to the model's bands; global min and max for the
   reference scaling, and band means (used to fill invalid pixels before the networks);
2. statistics: features of each strip (tiled network inference), RX mean and covariance of
   the enhanced cube(s) of valid pixels;
3. scores: features recomputed per strip, RX scores written (and the enhanced cubes, on
   request). Product fusion keeps the two RX maps in a temporary raster and multiplies their
   min-max normalised values in a last pass.
"""

import os
import time
from contextlib import ExitStack
from dataclasses import dataclass, field

import numpy as np
import torch

from .errors import InputError
from .feedback import Feedback, ProgressRange
from .preprocess import RangeAccumulator, apply_band_matrix, band_resampling_matrix, wavelength_coverage
from .raster_io import DEFAULT_BLOCK_MB, SCORE_NODATA, RasterReader, RasterWriter, Window, read_mask
from .rx import CovarianceAccumulator, fit_rx
from .tiling import SPATIAL_MARGIN, SPATIAL_TILE, as_tensor, buffer_margin, spatial_features, spectral_features

BRANCH_CHOICES = {0: ("spectral", "spatial"), 1: ("spectral",), 2: ("spatial",)}
FUSION_REFERENCE, FUSION_SUM, FUSION_PRODUCT = 0, 1, 2
PRODUCT_FUSION_MAX_BANDS = 50
MIN_WAVELENGTH_COVERAGE = 0.8


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


@dataclass
class DetectSummary:
    output_path: str
    branches: tuple
    fusion: str
    device: str
    valid_pixels: int
    seconds: dict = field(default_factory=dict)


def resolve_device(choice):
    """'auto' -> cuda when available, else cpu; 'cuda' without a GPU is an error."""
    if choice in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise InputError("DEVICE is cuda but PyTorch sees no CUDA GPU: choose auto or cpu, or install a CUDA build.")
    return choice


class BandMapping:
    """Maps the raster's selected bands onto the model's bands (one sparse matrix)."""

    def __init__(self, reader, model, feedback):
        n_in, n_out = reader.band_count, model.bands
        use_wavelengths = reader.wavelengths_nm is not None and model.wavelengths_nm is not None
        if use_wavelengths:
            coverage = wavelength_coverage(reader.wavelengths_nm, model.wavelengths_nm)
            if coverage < MIN_WAVELENGTH_COVERAGE:
                raise InputError(
                    f"The raster's wavelengths ({min(reader.wavelengths_nm):.0f}-{max(reader.wavelengths_nm):.0f} nm) "
                    f"cover only {coverage:.0%} of the model's range ({min(model.wavelengths_nm):.0f}-"
                    f"{max(model.wavelengths_nm):.0f} nm): use a model for this sensor's range."
                )
        self.matrix = band_resampling_matrix(
            n_in, n_out, reader.wavelengths_nm if use_wavelengths else None,
            model.wavelengths_nm if use_wavelengths else None,
        )
        how = "over wavelength" if use_wavelengths else "over the normalised band index"
        self.description = (f"identity ({n_in} bands)" if n_in == n_out and not use_wavelengths
                            else f"{n_in} raster bands resampled linearly {how} to the model's {n_out} bands")
        if n_in < n_out / 2:
            feedback.warning(
                f"The raster has {n_in} bands, far fewer than the model's {n_out}: bands are interpolated, "
                "which adds no information; results may be weaker than plain RX."
            )

    def __call__(self, data):
        return apply_band_matrix(self.matrix, data)


class Preprocessor:
    """Band mapping, reference scaling and filling of invalid pixels, per strip."""

    def __init__(self, reader, model, feedback):
        self.reader = reader
        self.mapping = BandMapping(reader, model, feedback)
        self.vmin = self.vmax = None
        self.fill = None

    def fit(self, windows, progress):
        ranges = RangeAccumulator()
        sums, count = None, 0
        for index, window in enumerate(windows):
            data, valid = self.reader.read(window, np.float32)
            pixels = self.mapping(data[:, valid])
            ranges.add(pixels)
            if pixels.shape[1]:
                block_sum = pixels.astype(np.float64).sum(axis=1)
                sums = block_sum if sums is None else sums + block_sum
                count += pixels.shape[1]
            progress((index + 1) / len(windows))
        if count == 0:
            raise InputError(
                "No valid pixels: every pixel is nodata, NaN or infinite in at least one used band. "
                "Check the input's nodata value and the band selection."
            )
        if not ranges.max > ranges.min:
            raise InputError(f"The input is constant (every valid value is {ranges.min}): nothing can stand out.")
        self.vmin, self.vmax = ranges.min, ranges.max
        self.fill = self.scale(sums / count)
        return count

    def scale(self, x):
        return ((np.asarray(x, np.float64) - self.vmin) / (self.vmax - self.vmin) * 2 - 1) * 0.1

    def strip(self, window):
        """Scaled model-band cube (bands, rows, cols) float32 with invalid pixels filled, and validity."""
        data, valid = self.reader.read(window, np.float32)
        mapped = self.mapping(data)
        scaled = ((mapped - np.float32(self.vmin)) * np.float32(0.2 / (self.vmax - self.vmin)) - np.float32(0.1))
        scaled[:, ~valid] = self.fill.astype(np.float32)[:, None]
        return scaled, valid


class FeatureStrips:
    """Yields (window, scaled x, valid, {branch: F}) for each output strip of the raster."""

    def __init__(self, reader, preprocessor, model, options, device):
        self.reader = reader
        self.preprocessor = preprocessor
        self.device = device
        self.networks = {name: model.branches[name].to(device).eval() for name in options.branches}
        self.options = options
        self.margin = buffer_margin(options.spatial_tile, options.spatial_margin, "spatial" in self.networks)
        bytes_per_row = reader.width * (reader.band_count + model.bands * 4) * 4
        rows = max(16, int(options.block_mb * 2**20 // bytes_per_row))
        self.windows = [Window(r, 0, min(rows, reader.height - r), reader.width) for r in range(0, reader.height, rows)]

    def __len__(self):
        return len(self.windows)

    def __iter__(self):
        height = self.reader.height
        for window in self.windows:
            top = max(window.row - self.margin, 0)
            bottom = min(window.row + window.rows + self.margin, height)
            buffer_window = Window(top, 0, bottom - top, self.reader.width)
            scaled, valid = self.preprocessor.strip(buffer_window)
            buffer = as_tensor(scaled)
            inner = slice(window.row - top, window.row - top + window.rows)
            features = {}
            with torch.inference_mode():
                if "spectral" in self.networks:
                    features["spectral"] = spectral_features(
                        self.networks["spectral"], buffer, top, window.row, window.rows, height, self.device
                    ).numpy()
                if "spatial" in self.networks:
                    features["spatial"] = spatial_features(
                        self.networks["spatial"], buffer, top, window.row, window.rows, height, self.device,
                        self.options.spatial_tile, self.options.spatial_margin,
                    ).numpy()
            yield window, scaled[:, inner], valid[inner], features


def choose_fusion(fusion, model_bands, branches):
    """'single', 'sum' or 'product' for the given FUSION choice and branches."""
    if len(branches) == 1:
        return "single"
    if fusion == FUSION_SUM:
        return "sum"
    if fusion == FUSION_PRODUCT:
        return "product"
    return "product" if model_bands <= PRODUCT_FUSION_MAX_BANDS else "sum"


def enhanced_cubes(x, features, fusion):
    """The cube(s) RX scores: x + sum of features, or x + each feature for product fusion."""
    if fusion == "product":
        return [x + features["spatial"], x + features["spectral"]]
    total = x.copy()
    for feature in features.values():
        total += feature
    return [total]


def run_fers_detection(input_path, output_path, model, options=None, feedback=None):
    """Score `input_path` with FERS (model features + global RX); write a float32 score raster."""
    options = options or DetectOptions()
    feedback = feedback or Feedback()
    timings = {}
    started = time.perf_counter()
    device = resolve_device(options.device)
    branches = tuple(b for b in options.branches if model.has_branch(b))
    missing = [b for b in options.branches if b not in branches]
    if not branches:
        raise InputError(f"The model has no {' or '.join(options.branches)} branch: choose BRANCHES it has "
                         f"({', '.join(model.branches)}).")
    if missing:
        feedback.warning(f"The model has no {', '.join(missing)} branch; using {', '.join(branches)} only.")
    options.branches = branches
    fusion = choose_fusion(options.fusion, model.bands, branches)

    reader = RasterReader(input_path, options.bands)
    mask = read_mask(options.mask_path, reader) if options.mask_path else None
    preprocessor = Preprocessor(reader, model, feedback)
    strips = FeatureStrips(reader, preprocessor, model, options, device)
    feedback.info(f"Model: {model.bands} bands, branches {', '.join(model.branches)}; "
                  f"{model.provenance.get('summary', model.provenance.get('source', ''))}")
    feedback.info(f"Band mapping: {preprocessor.mapping.description}.")
    feedback.info(f"Device: {device}; branches used: {', '.join(branches)}; fusion: {fusion}; "
                  f"{len(strips)} strip(s) of up to {strips.windows[0].rows} rows; spatial tiles "
                  f"{options.spatial_tile} px (core {options.spatial_tile - 2 * options.spatial_margin} px).")

    valid_pixels = preprocessor.fit(strips.windows, ProgressRange(feedback, 0, 10))
    timings["range pass"] = time.perf_counter() - started

    n_maps = 2 if fusion == "product" else 1
    accumulators = [CovarianceAccumulator(model.bands) for _ in range(n_maps)]
    progress = ProgressRange(feedback, 10, 55)
    for index, (window, x, valid, features) in enumerate(strips):
        use = valid if mask is None else valid & (mask.read(window)[0][0] == 0)
        for accumulator, cube in zip(accumulators, enhanced_cubes(x, features, fusion)):
            accumulator.add(cube[:, use].T)
        progress((index + 1) / len(strips))
    rx_models = [fit_rx(a) for a in accumulators]
    for rx_model in rx_models:
        if rx_model.regularised:
            feedback.warning(f"The enhanced cube's covariance is singular (rank {rx_model.rank} of "
                             f"{rx_model.n_features}); RX uses its pseudo-inverse.")
    timings["statistics pass"] = time.perf_counter() - started - sum(timings.values())

    _score_pass(reader, strips, rx_models, fusion, output_path, options, model, feedback)
    timings["score pass"] = time.perf_counter() - started - sum(timings.values())
    for stage, seconds in timings.items():
        feedback.info(f"{stage}: {seconds:.2f} s")
    return DetectSummary(str(output_path), branches, fusion, device, valid_pixels, timings)


def _score_pass(reader, strips, rx_models, fusion, output_path, options, model, feedback):
    """Write the score raster (and enhanced cubes on request); every file is committed only at the end."""
    band_names = [f"model band {i + 1}" for i in range(model.bands)]
    product = fusion == "product"
    with ExitStack() as stack:
        extra = {}
        for name, path in (("spectral", options.spectral_output), ("spatial", options.spatial_output)):
            if path and name in strips.networks:
                extra[name] = stack.enter_context(RasterWriter.like(reader, path, model.bands, band_names=band_names))
            elif path:
                feedback.warning(f"No {name} features were computed, so {os.path.basename(path)} is not written.")
        if product:
            maps_path = os.path.join(os.path.dirname(os.path.abspath(output_path)),
                                     f".{os.path.basename(output_path)}.rx-maps.tif")
            target = stack.enter_context(RasterWriter.like(reader, maps_path, 2))
            stack.callback(lambda: os.path.exists(maps_path) and os.remove(maps_path))
        else:
            target = stack.enter_context(RasterWriter.like(reader, output_path, band_names=["FERS anomaly score"]))
        ranges = [RangeAccumulator() for _ in rx_models]
        progress = ProgressRange(feedback, 55, 90 if product else 100)
        for index, (window, x, valid, features) in enumerate(strips):
            scores = np.full((len(rx_models), window.rows, window.cols), SCORE_NODATA, dtype=np.float32)
            for map_index, (rx_model, cube) in enumerate(zip(rx_models, enhanced_cubes(x, features, fusion))):
                scores[map_index][valid] = rx_model.score(cube[:, valid].T)
                ranges[map_index].add(scores[map_index][valid])
            target.write(window, scores)
            for name, extra_writer in extra.items():
                enhanced = x + features[name]
                enhanced[:, ~valid] = SCORE_NODATA
                extra_writer.write(window, enhanced)
            progress((index + 1) / len(strips))
        target.set_metadata({"fers_detector": "FERS + global RX", "fers_fusion": fusion})
        target.commit()
        if product:
            _write_product(maps_path, reader, output_path, ranges, ProgressRange(feedback, 90, 100))
        for extra_writer in extra.values():
            extra_writer.commit()


def _write_product(maps_path, reader, output_path, ranges, progress):
    """Product fusion (reference "ham"): min-max normalised RX(x + F_spa) times RX(x + F_spe)."""
    with RasterReader(maps_path) as maps, \
            RasterWriter.like(reader, output_path, band_names=["FERS anomaly score"]) as writer:
        windows = maps.windows()
        for index, window in enumerate(windows):
            data, valid = maps.read(window)
            product = np.full((window.rows, window.cols), SCORE_NODATA, dtype=np.float32)
            normalised = [(data[i][valid] - r.min) / max(r.max - r.min, 1e-30) for i, r in enumerate(ranges)]
            product[valid] = normalised[0] * normalised[1]
            writer.write(window, product)
            progress((index + 1) / len(windows))
        writer.set_metadata({"fers_detector": "FERS + global RX", "fers_fusion": "product"})
        writer.commit()
