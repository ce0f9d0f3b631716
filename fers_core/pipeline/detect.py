"""FERS detection over a raster: band mapping, scaling, learned features, global RX.

Passes over the raster (each streamed in windows, so memory follows the window size: full-width strips
when one fits MEMORY_MB, else windows of whole spatial tile cores; see FeatureStrips):
1. range: resample the bands of valid pixels to the model's bands; global min and max for the
   reference scaling, and band means (used to fill invalid pixels before the networks);
2. statistics: features of each strip (tiled network inference), RX mean and covariance of
   the enhanced cube(s) of valid pixels;
3. scores: the enhanced cubes kept from pass 2 in a temporary file (FeatureSpill; recomputed
   per strip when the disk lacks room, and always on a Dask cluster), RX scores written (and
   the enhanced cubes, on request). Product fusion keeps the two RX maps in a temporary raster and multiplies their
   min-max normalised values in a last pass.

Every pass works strip by strip through pure per-strip functions (range_partial,
statistics_partial, score_strip) whose partial results are merged in a fixed tree over the
strip index (blockwise.TreeReducer); fers_core.distributed.cluster runs the same functions on a Dask
cluster, so both paths give bit-identical outputs.
"""

import os
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch

from ..detectors.catalog import check_detector
from ..detectors.rx import CovarianceAccumulator, fit_rx
from ..enhance.model_cache import inference_network
from ..enhance.tiling import SPATIAL_MARGIN, SPATIAL_TILE, as_tensor, buffer_span, spatial_features, spectral_features
from ..errors import InputError
from ..feedback import Feedback, ProgressRange, StageFeedback
from ..io.atomic import Temporary, free_bytes, write_failure
from ..io.output_safety import check_outputs
from ..io.raster_io import (
    DEFAULT_BLOCK_MB,
    SCORE_NODATA,
    RasterReader,
    RasterWriter,
    Window,
    bounded_gdal_cache,
    check_raster_outputs,
    output_folder,
    read_mask,
    write_cache_mb,
)
from ..io.tile_settings import window_grid, window_shape
from .blockwise import TreeReducer, merged_covariance
from .preprocess import (
    RangeAccumulator,
    apply_band_matrix,
    band_resampling_matrix,
    scale_reference,
    wavelength_coverage,
)

BRANCH_CHOICES = {0: ("spectral", "spatial"), 1: ("spectral",), 2: ("spatial",)}
FUSION_REFERENCE, FUSION_SUM, FUSION_PRODUCT = 0, 1, 2
PRODUCT_FUSION_MAX_BANDS = 50
MIN_WAVELENGTH_COVERAGE = 0.8
COMBINE_BLOCK_MB = 16  # blocks of the score maps that product fusion multiplies
MIN_INPUT_BANDS = 3  # 1 or 2 bands interpolate to a flat or straight-line spectrum the networks never saw


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


@contextmanager
def torch_threads(threads):
    """Run the block with `threads` PyTorch intra-op threads (0 or None: leave as is).

    CPU inference is reproducible bit for bit only at a fixed thread count (the kernels split
    their sums differently), so the Dask path runs every block at the submitting machine's count.
    """
    previous = torch.get_num_threads()
    if threads and threads != previous:
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


PRECISIONS = ("auto", "float32", "mixed", "bfloat16")
"""Network arithmetic: "float32" everywhere; "mixed": the spectral encoder and the spatial trunk in
bfloat16, the rest in float32 (networks.inference.MIXED_PARTS; AUC within 0.0002 of float32 on the
real scenes); "bfloat16": autocast everywhere (AUC moved by up to 0.0065); "auto": "mixed" where the
device computes in bfloat16 natively (CPUs with AVX-512 BF16 or AMX, CUDA GPUs that support it),
else "float32", and only for a model whose provenance records that its AUC was checked under
"mixed" (MIXED_PRECISION_CHECKED: the bundled model, within 0.00025 on the 11 real scenes); the FERS
authors' checkpoints moved by up to 0.014 under "mixed", so unchecked models run float32."""

MIXED_PRECISION_CHECKED = "mixed_precision_checked"
"""Provenance key of a model whose detection AUC was measured to hold under "mixed" precision."""


def bfloat16_native(device):
    """Whether `device` has native bfloat16 arithmetic (emulated bfloat16 is slower than float32)."""
    try:
        if str(device).startswith("cuda"):
            return bool(torch.cuda.is_bf16_supported())
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # a private check that may move between PyTorch versions: assume not
        return False


def mixed_precision_checked(model):
    """Whether the model's provenance records that its AUC holds under "mixed" precision."""
    return bool((getattr(model, "provenance", None) or {}).get(MIXED_PRECISION_CHECKED))


def resolve_precision(precision, device, model=None):
    """The precision a run uses: PRECISIONS minus "auto" (float32 for a `model` without the mixed check)."""
    if precision not in PRECISIONS:
        raise InputError(f"Unknown precision '{precision}': use one of {', '.join(PRECISIONS)}.")
    if precision == "auto":
        checked = model is None or mixed_precision_checked(model)
        return "mixed" if checked and bfloat16_native(device) else "float32"
    return precision


@contextmanager
def network_precision(precision, device):
    """Autocast the networks to bfloat16 for the "bfloat16" precision (CPU or CUDA); nothing otherwise."""
    if resolve_precision(precision, device) != "bfloat16":
        yield
        return
    with torch.autocast(device_type="cuda" if str(device).startswith("cuda") else "cpu", dtype=torch.bfloat16):
        yield


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
        if n_in < MIN_INPUT_BANDS:
            raise InputError(
                f"The FERS networks need at least {MIN_INPUT_BANDS} bands but only {n_in} "
                f"{'is' if n_in == 1 else 'are'} selected: select more bands, or use the classical RX detector "
                "(fers:rx), which works with any number of bands."
            )
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


@dataclass
class RangePartial:
    """The range pass of one window (or of a merged run of windows)."""

    min: float
    max: float
    sum: np.ndarray
    count: int


def merge_range_partials(left, right):
    """A new RangePartial: `left` then `right` (min/max are exact in any order; sums follow the tree)."""
    def pick(a, b, function):
        return b if a is None else a if b is None else function(a, b)

    total = pick(left.sum, right.sum, lambda a, b: a + b)
    return RangePartial(pick(left.min, right.min, min), pick(left.max, right.max, max), total,
                        left.count + right.count)


class Preprocessor:
    """Band mapping, reference scaling and filling of invalid pixels, per strip."""

    def __init__(self, reader, model, feedback):
        self.reader = reader
        self.mapping = BandMapping(reader, model, feedback)
        self.vmin = self.vmax = None
        self.fill = None

    def fit(self, windows, progress):
        """Scaling range and fill values from every window (one partial per window, merged as a fixed tree)."""
        reducer = TreeReducer(merge_range_partials)
        for index, window in enumerate(windows):
            reducer.push(self.range_partial(window))
            progress((index + 1) / len(windows))
        return self.apply_range(reducer.result())

    def range_partial(self, window):
        """Minimum, maximum, float64 band sums and count of the valid model-band pixels of one window."""
        data, valid = self.reader.read(window, np.float32)
        flat, use = data.reshape(data.shape[0], -1), valid.reshape(-1)
        # np.compress keeps the band-first layout (boolean indexing would return a transposed copy)
        pixels = self.mapping(flat if use.all() else np.compress(use, flat, axis=1))
        ranges = RangeAccumulator().add(pixels)
        block_sum = pixels.sum(axis=1, dtype=np.float64) if pixels.shape[1] else None
        return RangePartial(ranges.min, ranges.max, block_sum, int(pixels.shape[1]))

    def apply_range(self, partial):
        """Set the scaling from merged RangePartials; returns the number of valid pixels."""
        if partial.count == 0:
            raise InputError(
                "No valid pixels: every pixel is nodata, NaN or infinite in at least one used band. "
                "Check the input's nodata value and the band selection."
            )
        if not partial.max > partial.min:
            raise InputError(f"The input is constant (every valid value is {partial.min}): nothing can stand out.")
        self.vmin, self.vmax = partial.min, partial.max
        self.fill = scale_reference(partial.sum / partial.count, self.vmin, self.vmax)
        return partial.count

    def strip(self, window):
        """Scaled model-band cube (bands, rows, cols) float32 with invalid pixels filled, and validity.

        Only the window is read; its raster bands are mapped to the model's at once and let go."""
        data, valid = self.reader.read(window, np.float32)
        mapped = self.mapping(data)
        del data
        scaled = scale_reference(mapped, self.vmin, self.vmax)
        scaled[:, ~valid] = self.fill[:, None]
        return scaled, valid


class FeatureStrips:
    """Yields (window, scaled x, valid, {branch: F}) for each output window of the raster.

    Windows are full-width strips when a strip fits MEMORY_MB, else (rows x cols) windows whose
    sides are whole spatial tile cores (tile_settings.window_shape), so the spatial tiles, and the
    output, are those of the full-width computation. Each window is read and preprocessed with
    exactly the context its spatial tiles and spectral halos need (tiling.buffer_span).
    """

    def __init__(self, reader, preprocessor, model, options, device):
        self.reader = reader
        self.preprocessor = preprocessor
        self.device = device
        self.precision = resolve_precision(options.precision, device, model)
        self.networks = {name: inference_network(model, name, device, self.precision == "mixed")
                         for name in options.branches}
        self.options = options
        self.spatial = "spatial" in self.networks
        bytes_per_pixel = (reader.band_count + model.bands * 4) * 4
        rows, cols = window_shape(reader.width, options.block_mb * 2**20 // bytes_per_pixel, self.spatial,
                                  options.spatial_tile, options.spatial_margin)
        self.windows = [Window(*cell) for cell in window_grid(reader.width, reader.height, rows, cols)]

    def __len__(self):
        return len(self.windows)

    def __iter__(self):
        for window in self.windows:
            yield (window, *self.compute(window))

    def buffer_window(self, window):
        """The window of the raster that `window`'s features need (its tiles' and halos' context)."""
        tile, margin = self.options.spatial_tile, self.options.spatial_margin
        top, bottom = buffer_span(window.row, window.rows, self.reader.height, tile, margin, self.spatial)
        left, right = buffer_span(window.col, window.cols, self.reader.width, tile, margin, self.spatial)
        return Window(top, left, bottom - top, right - left)

    def compute(self, window):
        """(scaled x, valid, {branch: F}) of one output window (read with its context)."""
        height, width = self.reader.height, self.reader.width
        context = self.buffer_window(window)
        scaled, valid = self.preprocessor.strip(context)
        buffer = as_tensor(scaled)
        inner = (slice(window.row - context.row, window.row - context.row + window.rows),
                 slice(window.col - context.col, window.col - context.col + window.cols))
        place = dict(buffer_col=context.col, out_col=window.col, out_cols=window.cols, image_width=width)
        features = {}
        with torch.inference_mode(), network_precision(self.precision, self.device):
            if "spectral" in self.networks:
                features["spectral"] = spectral_features(
                    self.networks["spectral"], buffer, context.row, window.row, window.rows, height, self.device,
                    **place,
                ).numpy()
            if self.spatial:
                features["spatial"] = spatial_features(
                    self.networks["spatial"], buffer, context.row, window.row, window.rows, height, self.device,
                    self.options.spatial_tile, self.options.spatial_margin, **place,
                ).numpy()
        return np.ascontiguousarray(scaled[(slice(None), *inner)]), valid[inner], features


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


def enhanced_cubes(x, features, fusion):
    """The cube(s) RX scores: x + sum of features, or x + each feature for product fusion."""
    if fusion == "product":
        return [x + features["spatial"], x + features["spectral"]]
    total = x.copy()
    for feature in features.values():
        total += feature
    return [total]


@dataclass
class DetectionSetup:
    """Everything a detection run needs before its passes: reader, mask, scaling, networks, fusion."""

    reader: RasterReader
    mask: RasterReader
    preprocessor: Preprocessor
    strips: FeatureStrips
    fusion: str
    device: str
    branches: tuple


def prepare_detection(input_path, model, options, feedback):
    """Check the model against the options and the raster; open them (no pass over the data yet)."""
    device = resolve_device(options.device)
    branches = tuple(b for b in options.branches if model.has_branch(b))
    missing = [b for b in options.branches if b not in branches]
    if not branches:
        raise InputError(f"The model has no {' or '.join(options.branches)} branch: choose BRANCHES it has "
                         f"({', '.join(model.branches)}).")
    if missing:
        feedback.warning(f"The model has no {', '.join(missing)} branch; using {', '.join(branches)} only.")
    options.branches = branches
    # resolved once here, so Dask workers use the submitting machine's choice (bit-identical outputs)
    asked, options.precision = options.precision, resolve_precision(options.precision, device, model)
    if asked == "auto" and options.precision == "mixed":
        feedback.info("Network arithmetic: spectral encoder and spatial trunk in bfloat16 (this model's AUC was "
                      "checked under it); PRECISION float32 forces float32.")
    elif asked == "auto" and not mixed_precision_checked(model):
        feedback.info("Network arithmetic: float32 (bfloat16 is used only for models whose AUC was checked under it).")
    fusion = choose_fusion(options.fusion, model.bands, branches)

    reader = RasterReader(input_path, options.bands, direct_io=True)  # windows read past GDAL's block cache
    mask = read_mask(options.mask_path, reader) if options.mask_path else None
    preprocessor = Preprocessor(reader, model, feedback)
    strips = FeatureStrips(reader, preprocessor, model, options, device)
    feedback.info(f"Model: {model.bands} bands, branches {', '.join(model.branches)}; "
                  f"{model.provenance.get('summary', model.provenance.get('source', ''))}")
    feedback.info(f"Band mapping: {preprocessor.mapping.description}.")
    feedback.info(f"Device: {device}, {options.precision} precision; branches used: {', '.join(branches)}; "
                  f"fusion: {describe_fusion(options.fusion, fusion, model.bands)}; "
                  f"{len(strips)} window(s) of up to {strips.windows[0].rows}x{strips.windows[0].cols} px; "
                  "spatial tiles "
                  f"{options.spatial_tile} px (core {options.spatial_tile - 2 * options.spatial_margin} px).")
    return DetectionSetup(reader, mask, preprocessor, strips, fusion, device, branches)


def statistics_partial(strips, mask, fusion, window, keep=None):
    """One float64 CovarianceAccumulator per RX map for the background pixels of one strip.

    `keep(window, cubes, x, valid, features)`, when given, receives the strip's enhanced cubes
    (e.g. to spill them for the score pass instead of running the networks again).
    """
    x, valid, features = strips.compute(window)
    use = valid if mask is None else valid & (mask.read(window)[0][0] == 0)
    cubes = enhanced_cubes(x, features, fusion)
    if keep is not None:
        keep(window, cubes, x, valid, features)
    use = use.reshape(-1)
    partial = []
    for cube in cubes:
        accumulator = CovarianceAccumulator(cube.shape[0])
        accumulator.add_bands(cube.reshape(cube.shape[0], -1), None if use.all() else use)
        partial.append(accumulator)
    return partial


def merge_statistics_partials(left, right):
    """New accumulators: `left` then `right`, map by map (the merge of TreeReducer in every path)."""
    return [merged_covariance(a, b) for a, b in zip(left, right)]


def fit_rx_models(partial, feedback):
    rx_models = [fit_rx(accumulator) for accumulator in partial]
    for rx_model in rx_models:
        if rx_model.regularised:
            feedback.warning(f"The enhanced cube's covariance is singular (rank {rx_model.rank} of "
                             f"{rx_model.n_features}); RX uses its pseudo-inverse.")
    return rx_models


@dataclass
class ScoreBlock:
    """What the score pass produces for one strip: RX map(s), their ranges, enhanced cubes asked for."""

    scores: np.ndarray  # (maps, rows, cols) float32, SCORE_NODATA where invalid
    ranges: list  # one RangeAccumulator per map
    extras: dict  # branch name -> x + F (bands, rows, cols) float32, SCORE_NODATA where invalid


def score_strip(strips, rx_models, fusion, window, extra_names=()):
    """The ScoreBlock of one strip (features recomputed from the raster)."""
    x, valid, features = strips.compute(window)
    extras = {name: x + features[name] for name in extra_names}
    return score_cubes(rx_models, enhanced_cubes(x, features, fusion), valid, extras)


def score_cubes(rx_models, cubes, valid, extras):
    """The ScoreBlock of one strip from its enhanced cubes (one per RX map) and extra cubes (x + F)."""
    scores = np.full((len(rx_models), valid.shape[0], valid.shape[1]), SCORE_NODATA, dtype=np.float32)
    ranges = []
    all_valid = bool(valid.all())
    for map_index, (rx_model, cube) in enumerate(zip(rx_models, cubes)):
        map_scores = rx_model.score_bands(cube.reshape(cube.shape[0], -1), None if all_valid else valid.reshape(-1))
        scores[map_index][valid] = map_scores.reshape(valid.shape)[valid]
        ranges.append(RangeAccumulator().add(scores[map_index][valid]))
    for enhanced in extras.values():
        enhanced[:, ~valid] = SCORE_NODATA
    return ScoreBlock(scores, ranges, extras)


class FeatureSpill:
    """The statistics pass's enhanced cubes, kept in a temporary file beside the output for the score pass.

    Running the networks once instead of twice roughly halves detection time; the file is written
    and read with plain file I/O (not memory-mapped), so it does not count in the process's memory.
    It is deleted when the run ends, however it ends.
    """

    def __init__(self, temporary, needed_bytes=None):
        self._temporary = temporary  # a registered Temporary: deleted on a signal or a failed run too
        self.path = temporary.path
        self.needed_bytes = needed_bytes
        self._file = open(self.path, "w+b")  # noqa: SIM115 (closed in close())
        self._index = {}

    @classmethod
    def create(cls, output_path, pixels, bands, arrays, feedback):
        """A spill file beside the output, or None (recompute instead) when the disk has too little room."""
        folder = output_folder(output_path)
        needed = pixels * (bands * 4 * arrays + 1)
        free = free_bytes(folder)
        if free is not None and free < needed * 1.1 + 256 * 2**20:
            feedback.info(f"Not enough free disk space in {folder} to keep the features between passes "
                          f"({needed / 2**20:,.0f} MB needed): the networks run again in the score pass.")
            return None
        spill = cls(Temporary(output_path, "features", ".bin"), needed)
        feedback.info(f"The features are kept between passes in {spill.path} (up to {needed / 2**20:,.0f} MB; "
                      "deleted when the run ends).")
        return spill

    def put(self, key, arrays, valid):
        self._file.seek(0, os.SEEK_END)
        entries = []
        try:
            for array in list(arrays) + [valid]:
                array = np.ascontiguousarray(array)
                entries.append((self._file.tell(), array.shape, array.dtype))
                self._file.write(array.tobytes())
        except OSError as error:  # a full disk, a file-size limit
            self._fail(error)
        self._index[key] = entries

    def get(self, key):
        """The arrays stored under key, then the validity mask."""
        arrays = []
        try:
            for offset, shape, dtype in self._index[key]:
                self._file.seek(offset)  # writes the buffered end of the last put: its errors surface here
                arrays.append(np.fromfile(self._file, dtype=dtype, count=int(np.prod(shape))).reshape(shape))
        except OSError as error:
            self._fail(error)
        return arrays[:-1], arrays[-1]

    def _fail(self, error):
        written = os.path.getsize(self.path) if os.path.exists(self.path) else None
        self.close()
        raise write_failure(error, self.path, self.needed_bytes, written_bytes=written) from None

    def close(self):
        try:
            self._file.close()
        except OSError:  # the last buffered write failed: the file is deleted anyway
            pass
        self._temporary.remove()


def extra_outputs(options, networks, feedback):
    """{branch: path} of the enhanced cubes to write; warns about those no branch computes."""
    extra = {}
    for name, path in (("spectral", options.spectral_output), ("spatial", options.spatial_output)):
        if path and name in networks:
            extra[name] = path
        elif path:
            feedback.warning(f"No {name} features were computed, so {os.path.basename(path)} is not written.")
    return extra


def check_detection_formats(output_path, options, model_bands):
    """The score raster's and the enhanced cubes' (model bands each) output formats, before the first pass."""
    check_raster_outputs([("the score output", output_path, 1),
                          ("the spectral cube output", options.spectral_output, model_bands),
                          ("the spatial cube output", options.spatial_output, model_bands)])


def run_fers_detection(input_path, output_path, model, options=None, feedback=None):
    """Score `input_path` with FERS (model features + global RX); write a float32 score raster."""
    options = options or DetectOptions()
    feedback = feedback or Feedback()
    check_outputs([("the score output", output_path), ("the spectral cube output", options.spectral_output),
                   ("the spatial cube output", options.spatial_output)],
                  [("the input", input_path), ("the mask", options.mask_path)])
    check_detection_formats(output_path, options, model.bands)
    check_detector(options.detector, options.window_inner, options.window_outer)
    timings = {}
    started = time.perf_counter()
    with torch_threads(options.threads):
        setup = prepare_detection(input_path, model, options, feedback)
        windows = setup.strips.windows
        valid_pixels = setup.preprocessor.fit(windows, ProgressRange(feedback, 0, 10))
        timings["range pass"] = time.perf_counter() - started
        if options.detector != "global":
            _run_local_detector(setup, options, output_path, model.bands, feedback)
            timings[options.detector] = time.perf_counter() - started - sum(timings.values())
            for stage, seconds in timings.items():
                feedback.info(f"{stage}: {seconds:.2f} s")
            return DetectSummary(str(output_path), setup.branches, setup.fusion, setup.device, valid_pixels, timings)

        extra = extra_outputs(options, setup.strips.networks, feedback)
        n_maps = 2 if setup.fusion == "product" else 1
        spill = FeatureSpill.create(output_path, setup.reader.pixel_count, model.bands, n_maps + len(extra),
                                    feedback) if options.spill else None
        try:
            keep = None
            if spill is not None:
                def keep(window, cubes, x, valid, features):
                    spill.put(window, list(cubes) + [x + features[name] for name in extra], valid)

            reducer = TreeReducer(merge_statistics_partials)
            progress = ProgressRange(feedback, 10, 55)
            for index, window in enumerate(windows):
                reducer.push(statistics_partial(setup.strips, setup.mask, setup.fusion, window, keep))
                progress((index + 1) / len(windows))
            rx_models = fit_rx_models(reducer.result(), feedback)
            timings["statistics pass"] = time.perf_counter() - started - sum(timings.values())

            def spilled_block(window):
                arrays, valid = spill.get(window)
                return score_cubes(rx_models, arrays[:n_maps], valid, dict(zip(extra, arrays[n_maps:])))

            blocks = ((window, spilled_block(window) if spill is not None else
                       score_strip(setup.strips, rx_models, setup.fusion, window, tuple(extra))) for window in windows)
            write_detection_outputs(setup.reader, blocks, len(windows), len(rx_models), setup.fusion, output_path,
                                    extra, model.bands, feedback)
        finally:
            if spill is not None:
                spill.close()
        timings["score pass"] = time.perf_counter() - started - sum(timings.values())
    for stage, seconds in timings.items():
        feedback.info(f"{stage}: {seconds:.2f} s")
    return DetectSummary(str(output_path), setup.branches, setup.fusion, setup.device, valid_pixels, timings)


def write_detection_outputs(reader, blocks, n_blocks, n_maps, fusion, output_path, extra, model_bands, feedback):
    """Write (window, ScoreBlock) pairs, in any order: the score raster and the enhanced cubes in `extra`.

    The only writer of these files (the Dask path sends it the blocks); every file is committed
    only at the end.
    """
    band_names = [f"model band {i + 1}" for i in range(model_bands)]
    product = fusion == "product"
    written_bands = (2 if product else 1) + model_bands * len(extra)
    with bounded_gdal_cache(write_cache_mb(reader.width, written_bands)), ExitStack() as stack:
        writers = {name: stack.enter_context(RasterWriter.like(reader, path, model_bands, band_names=band_names))
                   for name, path in extra.items()}
        if product:
            maps_path = stack.enter_context(Temporary(output_path, "rx-maps", ".tif")).path
            target = stack.enter_context(RasterWriter.like(reader, maps_path, 2))
        else:
            target = stack.enter_context(RasterWriter.like(reader, output_path, band_names=["FERS anomaly score"]))
        ranges = [RangeAccumulator() for _ in range(n_maps)]
        progress = ProgressRange(feedback, 55, 90 if product else 100)
        for index, (window, block) in enumerate(blocks):
            target.write(window, block.scores)
            for total, block_range in zip(ranges, block.ranges):
                total.merge(block_range)
            for name, writer in writers.items():
                writer.write(window, block.extras[name])
            progress((index + 1) / n_blocks)
        target.set_metadata({"fers_detector": "FERS + global RX", "fers_fusion": fusion})
        target.commit()
        if product:
            _write_product(maps_path, reader, output_path, ranges, ProgressRange(feedback, 90, 100))
        for writer in writers.values():
            writer.commit()


def _write_product(maps_path, reader, output_path, ranges, progress):
    """Product fusion (reference "ham"): min-max normalised RX(x + F_spa) times RX(x + F_spe)."""
    _combine_maps([(maps_path, 0), (maps_path, 1)], reader, output_path, ranges, progress, "global RX")




def _run_local_detector(setup, options, output_path, model_bands, feedback):
    """Local RX or an RX variant (rx_variants.DETECTOR_VARIANTS) on the enhanced cube(s), spilled to temporary rasters.

    These detectors need each pixel's neighbourhood of the enhanced cube (or, for the variants,
    two passes over it), so the cube is written once beside the output (strip by strip, as the
    score pass would) and the detector streams it with its own halo.
    """
    from ..detectors.local_rx import run_local_rx
    from ..detectors.rx_variants import describe, detector_settings, run_rx_variant

    def detector(cube_path, map_path, stage):
        if options.detector == "local":
            return run_local_rx(cube_path, map_path, mask_path=options.mask_path, inner=options.window_inner,
                                outer=options.window_outer, block_mb=options.block_mb, feedback=stage)
        settings = detector_settings(options.detector, options.window_inner, options.window_outer)
        return run_rx_variant(cube_path, map_path, *settings, mask_path=options.mask_path,
                              block_mb=options.block_mb, feedback=stage)

    product = setup.fusion == "product"
    names = ["spatial", "spectral"] if product else ["enhanced"]
    with ExitStack() as stack:
        def scratch(purpose):  # a raster beside the output, unique to this run, deleted when the run ends
            return stack.enter_context(Temporary(output_path, purpose, ".tif")).path

        cube_paths = [scratch(f"{name}-cube") for name in names]
        map_paths = [scratch(f"{name}-local-rx") for name in names] if product else [output_path]
        feedback.info(f"The enhanced cube(s) for local RX are kept in {', '.join(cube_paths)} (up to "
                      f"{setup.reader.pixel_count * model_bands * 4 * len(names) / 2**20:,.0f} MB; deleted when the "
                      "run ends).")
        writers = [stack.enter_context(RasterWriter.like(setup.reader, path, model_bands)) for path in cube_paths]
        band_names = [f"model band {i + 1}" for i in range(model_bands)]
        extras = {name: stack.enter_context(RasterWriter.like(setup.reader, path, model_bands, band_names=band_names))
                  for name, path in extra_outputs(options, setup.strips.networks, feedback).items()}
        progress = ProgressRange(feedback, 10, 40)
        for index, window in enumerate(setup.strips.windows):
            x, valid, features = setup.strips.compute(window)
            for writer, cube in zip(writers, enhanced_cubes(x, features, setup.fusion)):
                cube[:, ~valid] = SCORE_NODATA
                writer.write(window, cube)
            for name, writer in extras.items():
                enhanced = x + features[name]
                enhanced[:, ~valid] = SCORE_NODATA
                writer.write(window, enhanced)
            progress((index + 1) / len(setup.strips.windows))
        for writer in writers:
            writer.commit()
        span = 55 / len(names)
        for index, (cube_path, map_path) in enumerate(zip(cube_paths, map_paths)):
            detector(cube_path, map_path, StageFeedback(feedback, 40 + index * span, 40 + (index + 1) * span))
        if product:
            ranges = [_score_range(path) for path in map_paths]
            name = "local RX" if options.detector == "local" else \
                describe(*detector_settings(options.detector, options.window_inner, options.window_outer))
            _combine_maps([(path, 0) for path in map_paths], setup.reader, output_path, ranges,
                          ProgressRange(feedback, 95, 100), name)
        for writer in extras.values():
            writer.commit()


def _score_range(path):
    ranges = RangeAccumulator()
    with RasterReader(path) as reader:
        for window in reader.windows():
            data, valid = reader.read(window, np.float32)
            ranges.add(data[0][valid])
    return ranges


def _combine_maps(sources, reader, output_path, ranges, progress, detector):
    """Product fusion of two score maps, each (raster path, band index): min-max normalised, multiplied."""
    with bounded_gdal_cache(write_cache_mb(reader.width, 1 + len(sources))), ExitStack() as stack:
        maps = {path: stack.enter_context(RasterReader(path)) for path in dict.fromkeys(p for p, _ in sources)}
        writer = stack.enter_context(RasterWriter.like(reader, output_path, band_names=["FERS anomaly score"]))
        # float32 reads of 16 MB blocks: with float64 reads of the default 64 MB blocks and their temporaries,
        # this step set the run's peak memory on large rasters (measured +150 MB at 2048^2 px)
        windows = next(iter(maps.values())).windows(COMBINE_BLOCK_MB, bytes_per_value=4)
        for index, window in enumerate(windows):
            blocks = {path: m.read(window, np.float32) for path, m in maps.items()}
            valid = np.logical_and.reduce([blocks[path][1] for path, _ in sources])
            product = np.full((window.rows, window.cols), SCORE_NODATA, dtype=np.float32)
            normalised = [(blocks[path][0][band][valid].astype(np.float64) - r.min) / max(r.max - r.min, 1e-30)
                          for (path, band), r in zip(sources, ranges)]
            product[valid] = normalised[0] * normalised[1]
            writer.write(window, product)
            progress((index + 1) / len(windows))
        writer.set_metadata({"fers_detector": f"FERS + {detector}", "fers_fusion": "product"})
        writer.commit()
