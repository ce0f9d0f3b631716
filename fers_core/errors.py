"""Exceptions that carry a message meant for the analyst."""


class FersError(Exception):
    """A problem the user can fix; the message says what is wrong and what to do."""


class InputError(FersError):
    """The input raster, mask or parameters cannot be used as given."""


class NoValidPixels(InputError):
    """No pixel of the raster is valid in every used band (io.bad_bands explains it when some bands are empty)."""


class ModelFileError(FersError):
    """A model file or checkpoint folder cannot be loaded."""


class DependencyError(FersError):
    """An optional dependency (torch, dask) is missing."""


class Cancelled(FersError):
    """The user cancelled the run."""

    def __init__(self, message="Cancelled by the user; no output was written."):
        super().__init__(message)


class OutputError(FersError):
    """An output cannot be written where asked: it is an input, another output, a folder, or the disk is full."""


def capitalised(text):
    """`text` with its first letter upper-case (messages built from a lower-case clause)."""
    return text[:1].upper() + text[1:]
