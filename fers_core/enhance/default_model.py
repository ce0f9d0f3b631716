"""Where the bundled default model lives."""

from pathlib import Path

from ..errors import ModelFileError

WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "weights"  # the plugin folder, above fers_core/enhance/
DEFAULT_MODEL_FILE = WEIGHTS_DIR / "fers_default.pt"


def default_model_path():
    """Path of the bundled model; a clear error when this installation has none."""
    if not DEFAULT_MODEL_FILE.is_file():
        raise ModelFileError(
            f"No bundled default model was found ({DEFAULT_MODEL_FILE.name} is missing from the plugin's weights "
            "folder): set MODEL to a FERS model file or to a FERS authors' checkpoint folder."
        )
    return DEFAULT_MODEL_FILE


DEFAULT_MEMBER_FILE = WEIGHTS_DIR / "fers_random200.pt"
"""The bundled default is an ensemble: fers_default.pt (its branches as requested) and fers_random200.pt (an
untrained 200-band spectral network), fused by rank; chosen by leave-one-sensor-out (weights/README.md)."""


def default_model_paths():
    """Paths of the bundled default ensemble's models; the bundled model alone when the member file is absent."""
    first = default_model_path()
    return [first, DEFAULT_MEMBER_FILE] if DEFAULT_MEMBER_FILE.is_file() else [first]
