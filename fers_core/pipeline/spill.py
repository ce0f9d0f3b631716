"""The feature spill: enhanced cubes kept on disk between the statistics and the score pass."""

import os

import numpy as np

from ..io.atomic import Temporary
from ..io.write_failures import free_bytes, megabytes, write_failure
from ..io.writer import output_folder


class FeatureSpill:
    """The statistics pass's enhanced cubes, kept in a temporary file beside the output for the score pass.

    The networks then run once per window instead of twice. Every window has its
    own fixed place in the file (from the window list alone), so any process that sees the file (this
    one, or the workers of a cluster on this machine) writes and reads its windows without an index;
    a task run twice writes the same bytes again. Plain file I/O, not memory-mapped, so the file does
    not count in a process's memory. Picklable: the path and the layout travel to the tasks, while
    the orchestration keeps the Temporary that deletes the file when the run ends, however it ends.
    """

    def __init__(self, path, windows, bands, arrays, needed_bytes):
        self.path = path
        self.bands = bands
        self.arrays = arrays  # float32 (bands, rows, cols) arrays per window, then its validity mask
        self.needed_bytes = needed_bytes
        self._offsets, offset = {}, 0
        for window in windows:
            self._offsets[window] = offset
            offset += window.rows * window.cols * (bands * 4 * arrays + 1)

    @classmethod
    def create(cls, output_path, windows, bands, arrays, feedback, stack):
        """A spill file beside the output, deleted when `stack` closes; None (recompute instead) when the disk
        has too little room."""
        folder = output_folder(output_path)
        needed = sum(window.rows * window.cols for window in windows) * (bands * 4 * arrays + 1)
        free = free_bytes(folder)
        if free is not None and free < needed * 1.1 + 256 * 2**20:
            feedback.info(f"Not enough free disk space in {folder} to keep the features between passes "
                          f"({needed / 2**20:,.0f} MB needed): the networks run again in the score pass.")
            return None
        temporary = stack.enter_context(Temporary(output_path, "features", ".bin"))
        spill = cls(temporary.path, windows, bands, arrays, needed)
        try:
            open(spill.path, "wb").close()
        except OSError as error:
            spill._fail(error)
        feedback.info(f"The features are kept between passes in a temporary file in {folder} (up to "
                      f"{megabytes(needed)}; deleted when the run ends).")
        return spill

    def put(self, window, arrays, valid):
        """Store the window's float32 arrays and its validity mask in the window's place."""
        arrays = list(arrays)
        if len(arrays) != self.arrays or any(a.dtype != np.float32 for a in arrays):
            raise ValueError(f"The feature spill holds {self.arrays} float32 arrays per window")
        try:
            with open(self.path, "r+b") as file:
                file.seek(self._offsets[window])
                for array in arrays + [valid]:
                    file.write(np.ascontiguousarray(array).tobytes())
        except OSError as error:  # a full disk, a file-size limit
            self._fail(error)

    def get(self, window):
        """The arrays stored for `window`, then its validity mask."""
        shape = (window.rows, window.cols)
        try:
            with open(self.path, "rb") as file:
                file.seek(self._offsets[window])
                arrays = [np.fromfile(file, np.float32, self.bands * shape[0] * shape[1]).reshape(self.bands, *shape)
                          for _ in range(self.arrays)]
                valid = np.fromfile(file, np.bool_, shape[0] * shape[1]).reshape(shape)
        except OSError as error:
            self._fail(error)
        return arrays, valid

    def _fail(self, error):
        written = os.path.getsize(self.path) if os.path.exists(self.path) else None
        raise write_failure(error, self.path, self.needed_bytes, written_bytes=written) from None
