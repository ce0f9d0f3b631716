"""The choices a FERS run offers, one enum each: how the branches fuse, which arithmetic the networks use and
how an ensemble fuses its members' score maps.

Each enum holds what a user asks for and what a run resolves it to (resolved once per run, into its
options), so the engine, the QGIS algorithms and the command line speak one type. The values are
the strings that reach the outside (the log, the score raster's metadata, model provenance); the
*_CHOICES tuples are the order the QGIS algorithms list them in (their enum parameter indices).
Torch-free, so a dialog lists the choices without importing the networks.
"""

import re
from enum import StrEnum

from .errors import InputError

PRODUCT_FUSION_MAX_BANDS = 50
"""The reference's rule: product fusion at this many model bands or fewer, sum above."""

MAX_MODEL_BANDS = 10_000
"""The most bands a FERS model may have: model files that declare more are refused, and so is fers:train's
MODEL_BANDS above it."""


class _Choice(StrEnum):
    """A choice whose members are the strings the outside sees; `parse` reads what a user asked for."""

    @classmethod
    def asked_for(cls) -> tuple:
        """The members a user can ask for (all of them unless a choice says otherwise)."""
        return tuple(cls)

    @classmethod
    def parse(cls, value):
        """The member `value` names (a member or its string) among `asked_for`, or InputError."""
        try:
            member = cls(value)
        except ValueError:
            member = None
        allowed = cls.asked_for()
        if member not in allowed:
            what = re.sub(r"(?<!^)(?=[A-Z])", " ", cls.__name__).lower()  # EnsembleFusion -> ensemble fusion
            raise InputError(f"Unknown {what} '{value}': use one of {', '.join(allowed)}.")
        return member


class Fusion(_Choice):
    """How the spectral and spatial branches combine before RX.

    Asked for: REFERENCE (the reference's rule by model bands), SUM (RX of x + F_spe + F_spa) or
    PRODUCT (the product of the min-max normalised RX of x + F_spa and of x + F_spe). A run uses
    SUM, PRODUCT or SINGLE (one branch: nothing to fuse), see `resolve`.
    """

    REFERENCE = "reference"
    SUM = "sum"
    PRODUCT = "product"
    SINGLE = "single"

    @classmethod
    def asked_for(cls) -> tuple:
        return FUSION_CHOICES  # SINGLE is what a run does with one branch, not a choice

    def resolve(self, model_bands: int, branches: tuple) -> "Fusion":
        """What this choice becomes for a model of `model_bands` bands running `branches`."""
        if len(branches) == 1:
            return Fusion.SINGLE
        if self is Fusion.REFERENCE:
            return Fusion.PRODUCT if model_bands <= PRODUCT_FUSION_MAX_BANDS else Fusion.SUM
        return self


FUSION_CHOICES = (Fusion.REFERENCE, Fusion.SUM, Fusion.PRODUCT)
"""The fusions a user can ask for, in the order of fers:detect's FUSION parameter."""


class Precision(_Choice):
    """Arithmetic of the networks.

    FLOAT32 everywhere; MIXED: the spectral encoder and the spatial trunk in bfloat16, the rest in
    float32 (networks.inference.MIXED_PARTS); BFLOAT16: autocast everywhere; AUTO: MIXED where the
    device computes in bfloat16 natively and the model's provenance records that its AUC was checked
    under MIXED, else FLOAT32 (enhance.precision.resolve_precision; bench/PRECISION_RESULTS.md has
    the measurements).
    """

    AUTO = "auto"
    FLOAT32 = "float32"
    MIXED = "mixed"
    BFLOAT16 = "bfloat16"


PRECISION_CHOICES = (Precision.FLOAT32, Precision.BFLOAT16, Precision.AUTO)
"""The precisions fers:detect's PRECISION parameter lists, in its order (MIXED is reached through AUTO)."""

BRANCH_CHOICES = (("spectral", "spatial"), ("spectral",), ("spatial",))
"""The branch sets a user can ask for, in the order of fers:detect's BRANCHES parameter."""


class EnsembleFusion(_Choice):
    """How an ensemble's score maps become one: RANK (the mean of each member's empirical CDF over the
    valid pixels) or STANDARDISED (the mean of (score - mean) / standard deviation)."""

    RANK = "rank"
    STANDARDISED = "standardised"


ENSEMBLE_FUSION_CHOICES = tuple(EnsembleFusion)
"""The ensemble fusions in the order of fers:detect's ENSEMBLE_FUSION parameter."""
