"""Where the bundled default model lives."""

from pathlib import Path

from .errors import ModelFileError

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
DEFAULT_MODEL_FILE = WEIGHTS_DIR / "fers_default.pt"


def default_model_path():
    """Path of the bundled model; a clear error when this installation has none."""
    if not DEFAULT_MODEL_FILE.is_file():
        raise ModelFileError(
            f"No bundled default model was found ({DEFAULT_MODEL_FILE.name} is missing from the plugin's weights "
            "folder): set MODEL to a FERS model file or to a FERS authors' checkpoint folder."
        )
    return DEFAULT_MODEL_FILE
