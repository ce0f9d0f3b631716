"""Memory guard: estimate a run's peak memory before it starts and refuse it, with the numbers,
when the machine does not have that much free, instead of letting the operating system kill QGIS.

The estimates follow what each detector holds at once (see the module of each detector):

- global RX (detectors.global_rx): one block of `MEMORY_MB` of float64 data (at least one row or one GDAL
  block), held about five times over (the raw read, the float64 copy, the background pixels, their
  centred copy; the score pass holds as many);
- local RX (local_rx): the tile plan_tiles picks (the halo block, its centred and pixel-major copies)
  and one pixel's Gram and bordered matrices;
- the RX variants (rx_variants: local-mean RXD, UTD, RXD-UTD): a strip with its halo rows, whitened,
  and its window-sum tables;
- FERS detection (detect): one window (`MEMORY_MB` of float32 input and model bands: a full-width
  strip when one fits, else about square, at least one tile core (TILE_SIZE - 2 x TILE_MARGIN) a
  side with the spatial branch) read with its context (TILE_MARGIN px around it, at least a whole
  tile, with the spatial branch; the 3 px spectral halo without), its band-mapped and scaled copies,
  features, enhanced cubes and RX temporaries, plus the networks' activations: one spectral tile
  (128 px core) and one batch of spatial tiles of TILE_SIZE px (tile_settings.SPATIAL_BATCH_PIXELS).

Each estimate adds a fixed allowance (GDAL's block cache, Python). They are meant to be upper
bounds within a factor of about two; test/test_bad_inputs.py checks them against a measured peak.

Available memory is MemAvailable of /proc/meminfo, lowered to the headroom of the process's
cgroup when a container sets a limit; on Windows the available physical memory; elsewhere
sysconf when it knows, and otherwise the check is skipped with a log line. Setting the
environment variable FERS_SKIP_MEMORY_CHECK=1 skips the check.
"""

import os
import sys
from dataclasses import dataclass, field

from osgeo import gdal

from ..choices import Fusion
from ..errors import InputError
from ..feedback import Feedback
from ..io.reader import RasterReader
from ..io.tile_settings import SPATIAL_BATCH_PIXELS, SPATIAL_MARGIN, SPATIAL_TILE, SPECTRAL_CORE
from ..io.windows import DEFAULT_BLOCK_MB, detection_window_shape

MB = 2**20
FIXED_ALLOWANCE = 96 * MB
"""GDAL's block cache as it fills, the output writer, Python and numpy temporaries."""
SKIP_VARIABLE = "FERS_SKIP_MEMORY_CHECK"
SPECTRAL_HALO = 3  # SpectralEnhancer.HALO (networks import torch, this module must not)
SPECTRAL_ACTIVATION_CHANNELS = 64 + 2 * 128 + 3 * 256
"""Channels alive at once per pixel in the spectral encoder (stem, bottleneck widths, outputs)."""
SPATIAL_ACTIVATION_CHANNELS = 512
"""Channels per pixel at full tile size in the spatial branch: the pyramid head's 128-channel fusion map
(held twice, before and after its ReLU), the trunk's stem and first stage (64 channels at 1/4 and 1/16 of
the pixels) and convolution workspaces, which grow with PyTorch's thread count; the false colour runs in
chunks of a fixed 4 MB (networks.inference) and the pyramid is reduced before it is upsampled, so neither
holds a full-size map any more. The estimate is an upper bound of the measured peaks (bench/MEMORY_RESULTS.md)."""


@dataclass
class MemoryEstimate:
    """Estimated peak bytes of a run, what the run is, and the parts by the parameter that sets them."""

    what: str
    parts: dict = field(default_factory=dict)  # parameter advice -> bytes
    overhead: int = FIXED_ALLOWANCE  # what no parameter changes: the fixed allowance and GDAL's cache

    @property
    def bytes(self):
        return int(sum(self.parts.values()) + self.overhead)

    def advice(self):
        """The change that helps most: the advice of the largest part."""
        return max(self.parts.items(), key=lambda item: item[1])[0]


def megabytes(value):
    return f"{value / MB:,.0f} MB"


def _value_bytes(reader):
    return reader.stored_dtype.itemsize


def _overhead(reader, output_bands=1):
    """The fixed allowance and GDAL's block cache, which fills with the blocks read and written up to its maximum."""
    touched = reader.pixel_count * (reader.band_count * _value_bytes(reader) + output_bands * 4)
    return FIXED_ALLOWANCE + min(int(gdal.GetCacheMax()), touched)


# ---------------------------------------------------------------------------------------------
# Estimates


def estimate_global_rx(reader, block_mb=DEFAULT_BLOCK_MB, blocks_at_once=1):
    """Peak memory of run_global_rx on an open RasterReader (`blocks_at_once` blocks in flight)."""
    windows = reader.windows(block_mb)
    pixels = max(window.pixels for window in windows)
    copies = 5 + (1 if reader._scaled else 0)
    block = pixels * reader.band_count * (copies * 8 + _value_bytes(reader))
    budget_limited = block_mb * MB >= reader.width * reader.band_count * 8
    advice = f"lower MEMORY_MB (now {block_mb})" if budget_limited else "select fewer BANDS"
    covariance = 3 * reader.band_count ** 2 * 8
    return MemoryEstimate(f"Global RX of {reader.width}x{reader.height} pixels x {reader.band_count} bands",
                          {advice: block * blocks_at_once + covariance}, _overhead(reader))


def estimate_local_rx(reader, block_mb=DEFAULT_BLOCK_MB, inner=5, outer=21, bands=None):
    """Peak memory of run_local_rx: the tile plan_tiles picks with its halo block (`bands`: after a projection)."""
    from ..detectors.local_rx import _bytes_per_input_pixel, _bytes_per_output_pixel, plan_tiles

    width, height = reader.width, reader.height
    bands = bands or reader.band_count
    rows, cols = plan_tiles(width, bands, outer, block_mb)
    rows, cols = min(rows, height), min(cols, width)
    block_pixels = min(rows + outer - 1, height) * min(cols + outer - 1, width)
    tile = rows * cols * _bytes_per_output_pixel(bands) + block_pixels * _bytes_per_input_pixel(bands)
    read = block_pixels * reader.band_count * (8 + _value_bytes(reader))
    factor = (bands + 2) ** 2 * 8 * 3  # the ring's Gram matrix and the bordered matrix factorised in place
    return MemoryEstimate(
        f"Local RX of {width}x{height} pixels x {bands} bands with a {outer} px outer window",
        {f"lower MEMORY_MB (now {block_mb})" if rows * cols > 1 else
         f"lower WINDOW_OUTER (now {outer}) or select fewer BANDS": tile + read + factor},
        _overhead(reader),
    )


def estimate_rx_variant(reader, block_mb=DEFAULT_BLOCK_MB, outer=21):
    """Peak memory of run_rx_variant: a block with its halo rows, whitened, and its window-sum tables."""
    from ..detectors.rx_variants import bytes_per_output_pixel, bytes_per_pixel, plan

    bands, width, height = reader.band_count, reader.width, reader.height
    rows, cols = plan(width, bands, outer, block_mb)
    rows, cols = min(rows, height), min(cols, width)
    pixels = min(rows + outer - 1, height) * min(cols + outer - 1, width)
    block = pixels * (bytes_per_pixel(bands) + bands * _value_bytes(reader))
    block += rows * cols * bytes_per_output_pixel(bands)
    return MemoryEstimate(
        f"RX variant of {width}x{height} pixels x {bands} bands with a {outer} px mean window",
        {f"lower MEMORY_MB (now {block_mb})" if rows > 1 else "select fewer BANDS": block + 3 * bands ** 2 * 8},
        _overhead(reader),
    )


def estimate_detection(reader, model_bands, block_mb=DEFAULT_BLOCK_MB, branches=("spectral", "spatial"),
                       spatial_tile=SPATIAL_TILE, rx_maps=1, extra_outputs=0, networks_on_cpu=True,
                       spatial_margin=None):
    """Peak memory of run_fers_detection: one window with its context and copies, and the networks."""
    width, height, bands, m = reader.width, reader.height, reader.band_count, int(model_bands)
    spatial = "spatial" in branches
    margin = min(SPATIAL_MARGIN, spatial_tile // 8) if spatial_margin is None else spatial_margin
    budget_pixels = block_mb * MB // ((bands + m * 4) * 4)

    def shape(spatial, budget=budget_pixels):
        rows, cols = detection_window_shape(width, budget, spatial, spatial_tile, margin)
        return min(height, rows), min(width, cols)

    def span(length, image_length, spatial):
        """Rows (or columns) read for `length` output rows: the spatial tiles' margins or the spectral halo."""
        if spatial and image_length <= spatial_tile:
            return image_length
        return min(image_length, max(length + 2 * (margin if spatial else SPECTRAL_HALO),
                                     spatial_tile if spatial else 0))

    def window_bytes(rows, cols, spatial):
        buffer_pixels = span(rows, height, spatial) * span(cols, width, spatial)
        read = bands * buffer_pixels * (_value_bytes(reader) + 4 + (4 if reader._scaled else 0))
        mapped = 2 * m * buffer_pixels * 4
        pixels = rows * cols
        cubes = m * pixels * 4 * (len(branches) + rx_maps + extra_outputs + 2)
        statistics = rx_maps * m * pixels * (4 + 8 + 8)
        return read + mapped + cubes + statistics

    rows, cols = shape(spatial)
    parts = {}
    small = shape(False) == shape(False, 1)  # the smallest window already: MEMORY_MB cannot help
    strip_advice = "select fewer BANDS" if small else f"lower MEMORY_MB (now {block_mb})"
    tile_advice = f"lower TILE_SIZE (now {spatial_tile})"
    parts[strip_advice] = window_bytes(rows, cols, spatial)
    if spatial:  # the context rows and the rounding of windows to whole tile cores are the tile size's doing
        parts[tile_advice] = max(0, parts[strip_advice] - window_bytes(*shape(False), False))
        parts[strip_advice] -= parts[tile_advice]
    networks = 0
    if networks_on_cpu and "spectral" in branches:
        core_pixels = (min(SPECTRAL_CORE, height) + 2 * SPECTRAL_HALO) * (min(SPECTRAL_CORE, width) + 2 * SPECTRAL_HALO)
        networks = core_pixels * (SPECTRAL_ACTIVATION_CHANNELS + 2 * m) * 4
    if networks_on_cpu and spatial:
        tile_rows, tile_cols = min(spatial_tile, height), min(spatial_tile, width)
        core = max(1, spatial_tile - 2 * margin)
        jobs = max(1, -(-rows // core)) * max(1, -(-cols // core))
        batch = max(1, SPATIAL_BATCH_PIXELS // (tile_rows * tile_cols))
        batch = max(min(batch, jobs), min(batch, 2))  # a lone tile runs as a batch of two (tiling.py)
        spatial_bytes = batch * tile_rows * tile_cols * (SPATIAL_ACTIVATION_CHANNELS + 3 * m) * 4
        if spatial_bytes > networks:  # the branches run one after the other: the larger one counts
            parts[tile_advice] += spatial_bytes
            networks = 0
    parts[strip_advice] += networks
    return MemoryEstimate(f"FERS detection of {width}x{height} pixels x {bands} bands with a {m}-band model", parts,
                          _overhead(reader, rx_maps + extra_outputs * m))


# ---------------------------------------------------------------------------------------------
# Available memory


def _read_number(path):
    try:
        with open(path) as stream:
            text = stream.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _meminfo_available():
    try:
        with open("/proc/meminfo") as stream:
            for line in stream:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _inactive_file(stat_path, key):
    try:
        with open(stat_path) as stream:
            for line in stream:
                name, _, value = line.partition(" ")
                if name == key:
                    return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _cgroup_headroom(root="/sys/fs/cgroup"):
    """Limit minus usage (reclaimable file cache excluded) of this container's cgroup, or None."""
    for limit_file, usage_file, stat_key in (("memory.max", "memory.current", "inactive_file"),
                                             ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes",
                                              "total_inactive_file")):
        limit = _read_number(os.path.join(root, limit_file))
        usage = _read_number(os.path.join(root, usage_file))
        if limit is None or usage is None or limit >= 2**60:  # "max" or the v1 "unlimited" sentinel
            continue
        stat = os.path.join(os.path.dirname(os.path.join(root, limit_file)), "memory.stat")
        return max(0, limit - max(0, usage - _inactive_file(stat, stat_key)))
    return None


def _windows_available():
    import ctypes

    class MemoryStatus(ctypes.Structure):
        _fields_ = [("length", ctypes.c_ulong), ("load", ctypes.c_ulong), ("total_physical", ctypes.c_ulonglong),
                    ("available_physical", ctypes.c_ulonglong), ("total_page", ctypes.c_ulonglong),
                    ("available_page", ctypes.c_ulonglong), ("total_virtual", ctypes.c_ulonglong),
                    ("available_virtual", ctypes.c_ulonglong), ("available_extended", ctypes.c_ulonglong)]

    status = MemoryStatus()
    status.length = ctypes.sizeof(MemoryStatus)
    if not ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status)):
        return None
    return int(status.available_physical)


def available_memory_bytes():
    """Bytes of memory a run can still use, or None when this platform does not say."""
    try:
        if sys.platform.startswith("win"):
            return _windows_available()
        found = [value for value in (_meminfo_available(), _cgroup_headroom()) if value is not None]
        if not found and hasattr(os, "sysconf") and "SC_AVPHYS_PAGES" in os.sysconf_names:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        return min(found) if found else None
    except Exception:  # never let the guard itself stop a run
        return None


# ---------------------------------------------------------------------------------------------
# The check


def check_memory(estimate, feedback=None, topic=""):
    """Raise InputError when the estimate exceeds the available memory; log both numbers otherwise (`topic`: what
    the log line is about, e.g. "the anomaly polygons", when it is not the run as a whole)."""
    feedback = feedback or Feedback()
    if os.environ.get(SKIP_VARIABLE, "").strip() not in ("", "0"):
        feedback.info(f"Memory check skipped ({SKIP_VARIABLE} is set); estimated need {megabytes(estimate.bytes)}.")
        return
    available = available_memory_bytes()
    if available is None:
        feedback.info(f"Estimated memory need {megabytes(estimate.bytes)}; the free memory is unknown on this "
                      "system, so it was not checked.")
        return
    if estimate.bytes > available:
        raise InputError(
            f"{estimate.what} needs about {megabytes(estimate.bytes)} of memory but only {megabytes(available)} "
            f"is available: {estimate.advice()}, or close other programs, then run again."
        )
    about = f" for {topic}" if topic else ""
    feedback.info(f"Memory{about}: about {megabytes(estimate.bytes)} needed, {megabytes(available)} available.")


def check_rx_run(input_path, bands=None, block_mb=DEFAULT_BLOCK_MB, local=False, inner=5, outer=21, feedback=None,
                 variant=False, local_bands=None):
    """The memory check of fers:rx: global, local with the given windows (`local_bands`: after a projection),
    or an RX variant of rx_variants (`variant`) with an `outer` px mean window."""
    with RasterReader(input_path, bands) as reader:
        if variant:
            estimate = estimate_rx_variant(reader, block_mb, outer)
        elif local:
            estimate = estimate_local_rx(reader, block_mb, inner, outer, local_bands)
        else:
            estimate = estimate_global_rx(reader, block_mb)
    check_memory(estimate, feedback)


def check_detection_run(input_path, models, options, feedback=None):
    """The memory check of fers:detect for its loaded models (an ensemble's members run one after another: the
    largest need counts) and its DetectOptions."""
    estimates = [_detection_estimate(input_path, model, options) for model in models]
    if estimates:
        check_memory(max(estimates, key=lambda estimate: estimate.bytes), feedback)


def _detection_estimate(input_path, model, options):
    branches = tuple(b for b in options.branches if model.has_branch(b)) or tuple(model.branches)
    product = options.fusion.resolve(model.bands, branches) is Fusion.PRODUCT
    extra = sum(1 for name, path in (("spectral", options.spectral_output), ("spatial", options.spatial_output))
                if path and name in branches)
    with RasterReader(input_path, options.bands) as reader:
        return estimate_detection(reader, model.bands, options.block_mb, branches, options.spatial_tile,
                                  2 if product else 1, extra, options.device != "cuda", options.spatial_margin)
