"""The advanced SCHEDULER parameter shared by fers:rx and fers:detect (run on a Dask cluster)."""

from qgis.core import QgsProcessingParameterString

from ..fers_core.distributed.cluster import check_scheduler
from .base import advanced

NAME = "SCHEDULER"
HELP = (
    "Empty = in this process (default); 'local' = a Dask cluster on this "
    "machine, one worker process per core; an address such as tcp://host:8786 = that cluster, whose workers "
    "must read the input{model} at the same path, and whose scheduler and workers must import this plugin "
    "(its folder on their PYTHONPATH). The raster is split into blocks (local detectors: tiles with their halos) "
    "over the workers and the result is identical to a run in this process. Every {what}.{ensemble} Needs "
    "dask.distributed (python -m pip install \"dask[distributed]\")."
)


def add_parameter(algorithm, models=False):
    """`models`: the algorithm runs FERS models (fers:detect), of which a cluster runs one."""
    text = HELP.format(model=" (and the model)" if models else "", what="detector" if models else "mode",
                       ensemble=" One model at a time: an ensemble, the default included, is refused: choose one "
                                "under Model (for example fers_default.pt)." if models else "")
    algorithm.add_parameter(advanced(QgsProcessingParameterString(
        NAME, algorithm.tr("Dask scheduler (empty = this process, 'local', or tcp://host:8786)"), defaultValue="",
        optional=True)), text)


def value(algorithm, parameters, context):
    """'' (in process), 'local' or an address; InputError for anything else."""
    return check_scheduler(algorithm.parameterAsString(parameters, NAME, context) or "")
