"""The feature spill: enhanced cubes kept on disk between the statistics and the score pass."""

import os

import numpy as np

from ..io.atomic import Temporary, free_bytes, write_failure
from ..io.raster_io import output_folder


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
