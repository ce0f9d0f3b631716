"""Training defaults and choices, importable without torch (the Processing algorithm reads them)."""

from ..choices import MAX_MODEL_BANDS  # noqa: F401 (MODEL_BANDS' upper bound, the same as model files')

DEFAULT_MODEL_BANDS = 50
DEFAULT_EPOCHS = 60
DEFAULT_PATCH_SIZE = 64
DEFAULT_BATCH_SIZE = 16
DEFAULT_LEARNING_RATE = 5e-3
MIN_PATCH_SIZE = 16
MIN_MODEL_BANDS = 2

STAGES_BOTH, STAGES_SPECTRAL, STAGES_SPATIAL = 0, 1, 2
TEACHER_OPTIONS = ("frozen-random", "trained")
DEFAULT_TEACHER = "frozen-random"
