"""Local-mean box sums: each output pixel's sum over its kernel minus its guard, by separable float32 run sums.

The kernel keeps its size near the edges (shifted inside the image) and the guard stays centred
and clipped, as local RX's windows. Run sums are built by doubling shorter ones, in a pairwise
order, so the rounding stays that of float32 values, with no running sum and no cancellation.
"""

import numpy as np
from numpy.lib.stride_tricks import as_strided


def _along(array, axis, start, length):
    """`length` elements of `array` along `axis` from `start` (a view)."""
    index = [slice(None)] * array.ndim
    index[axis] = slice(start, start + length)
    return array[tuple(index)]


def _run_sums(image, axis, size, powers):
    """Sums of every `size` consecutive elements along `axis` (the positions where they fit), float32.

    Built by doubling and adding shorter run sums (`powers`: {run: sums}, shared between the
    windows over one image, so a 21 px kernel starts from a 5 px guard's sums): a handful of
    whole-array additions instead of a running sum per line, in a pairwise (tree) order, so the
    rounding stays that of float32 values, with no cancellation.
    """
    count = image.shape[axis]
    powers.setdefault(1, image)
    covered = max(run for run in powers if run <= size)
    result = powers[covered]
    while covered < size:
        step = covered if 2 * covered <= size else max(run for run in powers if run <= size - covered)
        length = count - covered - step + 1
        result = _along(result, axis, 0, length) + _along(powers[step], axis, covered, length)
        covered += step
        powers.setdefault(covered, result)
    return result


def _column_run_sums(image, size):
    """_run_sums along the last axis of (k, rows, cols), each addition over whole rows x cols planes rather
    than row by row (numpy's per-row loops cost more than these short rows' additions): the columns past a
    run's last start hold sums wrapping into the next row, never read."""
    bands, rows, cols = image.shape
    if image.strides[2] != image.itemsize or image.strides[1] != cols * image.itemsize:
        image = np.ascontiguousarray(image)
    plane = rows * cols
    flat = as_strided(image, (bands, plane), (image.strides[0], image.itemsize), writeable=False)
    powers, result, covered = {1: flat}, flat, 1
    while covered < size:
        step = covered if 2 * covered <= size else max(run for run in powers if run <= size - covered)
        summed = np.empty((bands, plane), np.float32)
        np.add(result[:, :plane - covered], powers[step][:, covered:], out=summed[:, :plane - covered])
        summed[:, plane - covered:] = 0
        result, covered = summed, covered + step
        powers.setdefault(covered, summed)
    return result.reshape(bands, rows, cols)[:, :, :cols - size + 1]


def _pick(array, axis, starts):
    """`array` at `starts` along `axis`: a view when the starts are consecutive."""
    if len(starts) and np.all(np.diff(starts) == 1):
        return _along(array, axis, int(starts[0]), len(starts))
    return np.take(array, starts, axis=axis)


class WindowSums:
    """Sums over each output pixel's kernel minus guard (local RX's windows), by separable run sums.

    Kernel: `window` pixels shifted to stay inside the image (the sum of the nearest kernel that
    fits, so centred sums of the interior are replicated outwards); guard: `guard` pixels (0: none)
    centred and clipped (zero padding). Kernel and guard share their run sums along the rows.
    """

    def __init__(self, tile, window, guard):
        block, out = tile.block, tile.output
        self.window, self.guard = window, guard
        self.axes = []
        for start, stop, size, offset in ((out.row, out.row + out.rows, tile.height, block.row),
                                          (out.col, out.col + out.cols, tile.width, block.col)):
            centres = np.arange(start, stop)
            kernel = np.clip(centres, window // 2, size - 1 - window // 2) - offset if size > window else None
            self.axes.append((kernel, centres - offset, size, offset))

    def areas(self):
        """Each output pixel's count of kernel-minus-guard pixels when every pixel is usable."""
        def lengths(size_window, centres, size, offset):
            if size_window == self.window:
                return np.full(len(centres), min(size_window, size), np.float64)
            absolute, half = centres + offset, size_window // 2  # the guard: centred, clipped
            return (np.minimum(absolute + half + 1, size) - np.maximum(absolute - half, 0)).astype(np.float64)

        (_, row_centres, height, row_offset), (_, col_centres, width, col_offset) = self.axes
        result = 0.0
        for sign, size_window in ((1, self.window), (-1, self.guard)):
            if size_window:
                result = result + sign * np.outer(lengths(size_window, row_centres, height, row_offset),
                                                  lengths(size_window, col_centres, width, col_offset))
        return result

    def _kernel(self, image, axis, kernel, centres, pad, powers):
        if kernel is None:  # the kernel is the whole extent
            whole = image.sum(axis=axis, keepdims=True, dtype=np.float64).astype(np.float32)
            return np.repeat(whole, len(centres), axis=axis)
        sums = _column_run_sums(image, self.window) if axis == 2 else _run_sums(image, axis, self.window, powers)
        return _pick(sums, axis, kernel - self.window // 2 + pad)

    def padded(self, bands, rows, cols):
        """(array, its interior): room for a block of `bands` x rows x cols inside the guard's zero border
        (the guard, clipped at the image's edges, sums zeros there); filled, it goes to `padded_sums`."""
        pad = self.guard // 2
        padded = np.empty((bands, rows + 2 * pad, cols + 2 * pad), np.float32)
        if not pad:
            return padded, padded
        padded[:, :pad], padded[:, -pad:], padded[:, :, :pad], padded[:, :, -pad:] = 0, 0, 0, 0
        return padded, padded[:, pad:-pad, pad:-pad]

    def __call__(self, image):
        """(k, block rows, block cols) -> (k, out rows, out cols), float32."""
        padded, interior = self.padded(*image.shape)
        interior[...] = image
        return self.padded_sums(padded)

    def padded_sums(self, padded):
        """The sums of the block inside `padded` (see `padded`)."""
        pad = self.guard // 2
        (row_kernel, row_centres, _, _), (col_kernel, col_centres, _, _) = self.axes
        powers = {}
        if self.guard:  # first, so that the kernel's run sums along the rows start from the guard's
            guard_rows = _pick(_run_sums(padded, 1, self.guard, powers), 1, row_centres)
        rows = self._kernel(padded, 1, row_kernel, row_centres, pad, powers)
        del powers  # the shorter runs' sums: freed memory is reused while still in the cache
        result = self._kernel(rows, 2, col_kernel, col_centres, pad, {})
        if self.guard:
            del rows
            result -= _pick(_column_run_sums(guard_rows, self.guard), 2, col_centres)
        return np.ascontiguousarray(result)
