"""The advanced SCHEDULER parameter shared by fers:rx and fers:detect (run on a Dask cluster)."""

from qgis.core import QgsProcessingParameterString

from ..fers_core.distributed.cluster import check_scheduler
from .base import advanced

NAME = "SCHEDULER"
HELP = (
    "Empty = in this process (default); 'local' = a Dask cluster on this "
    "machine, one worker process per core; an address such as tcp://host:8786 = that cluster, whose workers "
    "must read the input (and the model) at the same path. The raster is split into blocks (local detectors: "
    "tiles with their halos) over the workers and the result is identical to a run in this process. Every "
    "mode and detector; one model at a time (an ensemble runs in this process). Needs dask.distributed "
    "(python -m pip install \"dask[distributed]\")."
)


def add_parameter(algorithm):
    algorithm.add_parameter(advanced(QgsProcessingParameterString(
        NAME, algorithm.tr("Dask scheduler (empty = this process, 'local', or tcp://host:8786)"), defaultValue="",
        optional=True)), HELP)


def value(algorithm, parameters, context):
    """'' (in process), 'local' or an address; InputError for anything else."""
    return check_scheduler(algorithm.parameterAsString(parameters, NAME, context) or "")
