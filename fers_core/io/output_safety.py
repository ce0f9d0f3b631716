"""Checks of a run's outputs before its first pass: no output is an input, no two outputs share a file, and
every output location can be written.

Files are compared by device and inode where they exist (so another spelling of the path, a symbolic link
or a hard link is the same file) and by their resolved path otherwise. An input counts with the files
that belong to it (an ENVI header, GDAL's ``.aux.xml``/``.ovr``/``.msk``, a GeoPackage's ``-wal``/``-shm``,
the files GDAL reads for it, such as a VRT's sources, every file of a checkpoint folder); an output with the
files its writer creates beside it.
"""

import os
import re

from ..errors import OutputError, capitalised
from .atomic import STALE_SIDECARS

_ENVI_EXTENSIONS = {".bsq", ".bil", ".bip", ".dat", ".envi"}  # outputs the ENVI driver writes, with a .hdr
_GDAL_SIDECARS = (".aux.xml", ".ovr", ".msk")
_SQLITE_SIDECARS = ("-wal", "-shm", "-journal")
_NOT_DATASETS = {".pt", ".pth", ".html", ".csv", ".txt", ".json"}  # inputs GDAL need not try


def _resolved(path):
    return os.path.normcase(os.path.realpath(os.path.abspath(os.path.expanduser(str(path)))))


def _identity(path):
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_dev, status.st_ino


def input_files(path):
    """The files that make up an input: the file, its companions, or every file of a folder."""
    from .reader import is_raster_source

    if not os.path.exists(os.path.expanduser(str(path))) and is_raster_source(str(path)):
        return _subdataset_files(str(path))  # e.g. NETCDF:"scene.nc":radiance is scene.nc
    path = os.path.abspath(os.path.expanduser(str(path)))
    if os.path.isdir(path):
        try:
            return [os.path.join(path, name) for name in sorted(os.listdir(path))
                    if os.path.isfile(os.path.join(path, name))]
        except OSError:
            return []
    stem = os.path.splitext(path)[0]
    candidates = [path, stem + ".hdr", path + ".hdr"] + [path + suffix for suffix in _GDAL_SIDECARS + _SQLITE_SIDECARS]
    candidates += _gdal_files(path)
    return [candidate for candidate in dict.fromkeys(candidates) if os.path.isfile(candidate)]


def _file_list(name, vector=False):
    """The files GDAL lists for the dataset `name` (quietly), [] when GDAL does not open it."""
    from osgeo import gdal

    from .reader import quiet_open

    dataset = quiet_open(name, gdal.OF_RASTER | (gdal.OF_VECTOR if vector else 0))
    return (dataset.GetFileList() or []) if dataset is not None else []


def _subdataset_files(name):
    """The files of a GDAL subdataset name or virtual file path (the container file: as GDAL lists it, or the archive
    a /vsizip/, /vsitar/ or /vsigzip/ path reads), with their companions."""
    files = [file for file in _file_list(name) if os.path.isfile(file)] or _vsi_archive(name)
    return [found for file in files for found in input_files(file)]


_VSI_PREFIXES = re.compile(r"^(/vsi\w+/)+")


def _vsi_archive(name):
    """[the local file a GDAL virtual path such as /vsizip//data/scenes.zip/scene.tif reads], or [] (a remote or
    in-memory source)."""
    rest = _VSI_PREFIXES.sub("", str(name))  # every prefix, as in chains: /vsitar//vsigzip//data/a.tar.gz/x.tif
    if rest == str(name):
        return []
    pieces = rest.replace("{", "").replace("}", "").split("/")
    for end in range(len(pieces), 0, -1):  # the longest leading part that is a file: the archive
        candidate = "/".join(pieces[:end])
        if candidate and os.path.isfile(candidate):
            return [candidate]
    return []


def _gdal_files(path):
    """The files GDAL reads for a dataset (a VRT's sources, a header), [] when GDAL does not open it."""
    if not os.path.isfile(path) or os.path.splitext(path)[1].lower() in _NOT_DATASETS:
        return []
    return [os.path.abspath(file) for file in _file_list(path, vector=True)]  # GDAL lists them from the working
    # folder (a VRT's relativeToVRT="0" source is read from there, a relative VRT's sources joined to its path)


def output_files(path):
    """The files writing `path` creates or replaces: the file, an ENVI header, and the sidecars GDAL and SQLite
    read beside it (.aux.xml, .ovr, .msk, journals), which the commit moves aside with an earlier file."""
    path = os.path.abspath(os.path.expanduser(str(path)))
    stem, extension = os.path.splitext(path)
    files = [path] + [path + suffix for suffix in STALE_SIDECARS]
    if extension.lower() in _ENVI_EXTENSIONS:
        files.append(stem + ".hdr")
    return files


def check_outputs(outputs, inputs=()):
    """Refuse (OutputError) an output that is an input's file or another output's, or that cannot be written.

    `outputs` and `inputs`: (parameter name, path) pairs; empty paths are skipped. Nothing is written.
    """
    outputs = [(name, str(path)) for name, path in outputs if path]
    inputs = [(name, str(path)) for name, path in inputs if path]
    for name, path in outputs:
        check_location(name, path)
    by_identity, by_path = {}, {}
    for name, path in inputs:
        for file in input_files(path):
            identity = _identity(file)
            if identity is not None:
                by_identity.setdefault(identity, (name, path, file))
            by_path.setdefault(_resolved(file), (name, path, file))
    for name, path in outputs:
        for file in output_files(path):
            found = by_identity.get(_identity(file)) if os.path.exists(file) else None
            found = found or by_path.get(_resolved(file))
            if found:
                input_name, input_path, input_file = found
                what = f"{input_name} '{input_path}'"
                if _resolved(input_file) != _resolved(input_path):
                    what += f" (its file '{os.path.basename(input_file)}')"
                written = "" if file == output_files(path)[0] else f" (writing it also writes '{file}')"
                raise OutputError(capitalised(
                    f"{name} '{path}'{written} is the same file as {what}: writing it would destroy the input. "
                    "Choose another output file name."
                ))
    for name, path in outputs:
        _check_envi_header(name, path)
    seen_identity, seen_path = {}, {}
    for name, path in outputs:
        files = output_files(path)
        for file in files:
            identity = _identity(file) if os.path.exists(file) else None
            other = (seen_identity.get(identity) if identity else None) or seen_path.get(_resolved(file))
            if other and other[0] != name:
                shared = "the same file" if file == files[0] else f"written to the same file '{file}'"
                where = f"'{path}'" if path == other[1] else f"'{path}' and '{other[1]}'"
                raise OutputError(capitalised(
                    f"{name} and {other[0]} are {shared} ({where}): one would overwrite the other. Give each output "
                    "its own file name."
                ))
        for file in files:
            identity = _identity(file) if os.path.exists(file) else None
            if identity:
                seen_identity.setdefault(identity, (name, path))
            seen_path.setdefault(_resolved(file), (name, path))


def check_distinct_inputs(inputs, advice):
    """InputError when two of the (parameter name, path) `inputs` are the same file (another spelling, a link);
    `advice` says what to do instead. Empty paths are skipped."""
    from ..errors import InputError

    seen = {}
    for name, path in inputs:
        if not path:
            continue
        path = str(path)
        key = _identity(os.path.expanduser(path)) or _resolved(path)
        if key in seen:
            other_name, other_path = seen[key]
            both = f"'{path}'" if other_path == path else f"'{other_path}' and '{path}'"
            raise InputError(capitalised(f"{other_name} and {name} are the same file ({both}): {advice}"))
        seen[key] = (name, path)


def check_location(name, path):
    """Refuse an output that is a folder, a GDAL virtual path, lies under a regular file, or in a folder that cannot
    be written."""
    if str(path).startswith("/vsi"):  # /vsimem/ vanishes with the process; /vsizip/, /vsis3/ ... cannot be renamed
        raise OutputError(capitalised(f"{name} '{path}' is on one of GDAL's virtual file systems: outputs are files on "
                                    "disk, written under a temporary name and renamed into place when complete. "
                                    "Write a local file, then copy it where it should go."))
    path = os.path.abspath(os.path.expanduser(str(path)))
    if os.path.isdir(path):
        raise OutputError(capitalised(f"{name} '{path}' is an existing folder: give a file name, e.g. "
                                    f"'{os.path.join(path, 'output' + _example_extension(name))}'."))
    if os.path.exists(path) and not os.path.isfile(path):
        raise OutputError(capitalised(f"{name} '{path}' is not a regular file (a device, pipe or socket): outputs "
                                    "are written under a temporary name and renamed into place, which would replace "
                                    "it. Give a file name (to discard an optional output, leave it empty)."))
    length = len(os.fsencode(os.path.basename(path)))
    if length > MAX_NAME_BYTES:
        raise OutputError(capitalised(f"{name}: the file name is {length} bytes long; use at most {MAX_NAME_BYTES} "
                                    "(file systems hold 255, and GDAL and FERS add suffixes such as .aux.xml beside "
                                    "the file)."))
    folder = os.path.dirname(path)
    existing = folder
    while not os.path.exists(existing):
        parent = os.path.dirname(existing)
        if parent == existing:
            break
        existing = parent
    if not os.path.isdir(existing):
        raise OutputError(f"Cannot create the output folder of {name} ('{folder}'): '{existing}' is a file, not a "
                          "folder. Choose another output location.")
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "folder" if existing == folder else "folder (where its folder would be created)"
        raise OutputError(f"Cannot write to the {where} '{existing}' of {name}: choose an output location you "
                          "can write to.")



MAX_NAME_BYTES = 240  # 255, less the longest suffix written beside an output (".aux.xml", ".resume.pt")


def _check_envi_header(name, path):
    """Refuse an ENVI output whose header name (<stem>.hdr) is the header of another file's data (cube.bsq beside
    cube.dat and cube.hdr): writing it would rewrite that file's band count, wavelengths and the rest."""
    stem, extension = os.path.splitext(path)
    if extension.lower() not in _ENVI_EXTENSIONS or os.path.exists(path) or not os.path.isfile(stem + ".hdr"):
        return
    others = [file for file in [stem] + [stem + ext for ext in sorted(_ENVI_EXTENSIONS) + [".img", ".raw"]]
              if os.path.isfile(file)]
    if others:
        raise OutputError(capitalised(f"{name} '{path}' would be written with the header '{stem}.hdr', which "
                                    f"describes '{os.path.basename(others[0])}': writing it would change that file. "
                                    "Choose another output name."))


def _example_extension(name):
    upper = name.upper()
    if "MODEL" in upper:
        return ".pt"
    if "HTML" in upper:
        return ".html"
    if "CSV" in upper:
        return ".csv"
    if "POLYGON" in upper:
        return ".gpkg"
    return ".tif"
