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


DEFAULT_MEMBER_FILES = (WEIGHTS_DIR / "fers_spectral100.pt", WEIGHTS_DIR / "fers_spectral200.pt")
"""The bundled default is an ensemble: fers_default.pt (its branches as requested) and two trained spectral networks
at 100 and 200 model bands, fused by rank; chosen by leave-one-sensor-out (bench/BAND_STUDY.md, weights/README.md)."""


def default_model_paths():
    """Paths of the bundled default ensemble's models; a clear error when the installation lacks one of them."""
    missing = [path.name for path in DEFAULT_MEMBER_FILES if not path.is_file()]
    if missing:
        raise ModelFileError(
            f"The bundled default ensemble is incomplete ({', '.join(missing)} missing from the plugin's weights "
            "folder): reinstall the plugin, or set MODEL to a FERS model file."
        )
    return [default_model_path(), *DEFAULT_MEMBER_FILES]
