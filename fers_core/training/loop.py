"""The epoch loop shared by both stages: seeding, progress, cancel, per-epoch checkpoints and resume.

Reproducibility: the patches of epoch ``e`` are drawn from ``(seed, stage, e)`` only, the torch
RNG is reseeded from the same triple at the start of every epoch, and the loop runs under
``torch.use_deterministic_algorithms`` (warnings only where an operation has no deterministic
version, e.g. some CUDA backward kernels). The same data, settings and seed give the same model on
the same machine (same device type and thread count), whether or not the run was resumed.

The checkpoint ``<output>.resume.pt`` is written after every epoch (atomically) and holds only
plain types and tensors, so ``torch.load(weights_only=True)`` reads it: format, fingerprint of the
settings, stage, epochs done, the trainer's state dicts, the optimizer state and the loss history.
"""

import json
import math
import os
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from ..enhance.torch_file import save_atomically
from ..errors import FersError
from ..feedback import Feedback

RESUME_SUFFIX = ".resume.pt"
CHECKPOINT_FORMAT = "fers-training-checkpoint"
CHECKPOINT_VERSION = 1
SEED_MODULUS = 2 ** 63 - 1


class TrainingDiverged(FersError):
    """The loss became NaN or infinite."""


@dataclass(frozen=True)
class LoopSettings:
    """What the epoch loop needs: epochs, batch size, patches per epoch, seed and device."""

    epochs: int
    batch_size: int
    patches_per_epoch: int
    seed: int
    device: str = "cpu"


def resume_path(output_path):
    """The checkpoint beside the output model: ``<output>.resume.pt``."""
    return str(output_path) + RESUME_SUFFIX


def epoch_seed(seed, stage, epoch):
    """A torch seed derived from (seed, stage, epoch) only."""
    return (int(seed) * 1_000_003 + int(stage) * 10_007 + int(epoch)) % SEED_MODULUS


@contextmanager
def deterministic_algorithms(device):
    """Run under ``torch.use_deterministic_algorithms(True)``; restore the caller's setting afterwards."""
    previous = torch.are_deterministic_algorithms_enabled()
    previous_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    if str(device).startswith("cuda"):
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have a deterministic implementation.*")
            yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=previous_warn)


def plain(value):
    """A JSON round trip: tuples become lists, so fingerprints compare equal after saving."""
    return json.loads(json.dumps(value))


class ResumeFile:
    """Reads and writes ``<output>.resume.pt`` for one set of settings (the fingerprint)."""

    def __init__(self, path, fingerprint, feedback=None, enabled=True):
        self.path = str(path)
        self.fingerprint = plain(fingerprint)
        self.feedback = feedback or Feedback()
        self.enabled = enabled
        self.owned = False  # whether the file on disk is this run's: loaded as matching, or saved by it

    def load(self, map_location="cpu"):
        """The saved checkpoint when it exists and matches the settings, else None (with a log line)."""
        if not os.path.exists(self.path):
            return None
        name = os.path.basename(self.path)
        if not self.enabled:
            self.feedback.info(f"RESUME is off: {name} is ignored and will be overwritten.")
            return None
        try:
            content = torch.load(self.path, weights_only=True, map_location=map_location)
        except Exception:  # damaged or foreign files come in many error types
            self.feedback.warning(f"The checkpoint {name} cannot be read; training starts afresh and will "
                                  "overwrite it.")
            return None
        if not isinstance(content, dict) or content.get("format") != CHECKPOINT_FORMAT:
            self.feedback.warning(f"{name} is not a FERS training checkpoint; training starts afresh and will "
                                  "overwrite it.")
            return None
        if content.get("version") != CHECKPOINT_VERSION or content.get("fingerprint") != self.fingerprint:
            self.feedback.warning(
                f"The checkpoint {name} was written with other settings or inputs; training starts afresh "
                "and will overwrite it."
            )
            return None
        self.owned = True
        return content

    def save(self, stage, epochs_done, trainer, history, extra=None):
        """Write the checkpoint atomically (temporary file in the same folder, then rename)."""
        content = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "fingerprint": self.fingerprint,
            "stage": stage,
            "epochs_done": int(epochs_done),
            "state": {name: {key: value.detach().cpu() for key, value in module.state_dict().items()}
                      for name, module in trainer.modules().items()},
            "optimizer": trainer.optimizer.state_dict(),
            "history": plain(history),
            "extra": extra or {},
        }
        save_atomically(content, self.path, keep_on_failure=True)  # a failed or cancelled run keeps it to resume
        self.owned = True

    def remove(self):
        if os.path.exists(self.path):
            os.remove(self.path)

    @contextmanager
    def named_when_stopped(self):
        """A cancel or Ctrl+C inside the block says that this run's checkpoint is kept, and how to use it (the
        generic message says no output was written, while the checkpoint of the finished epochs stays)."""
        from ..errors import Cancelled
        from ..runtime.run_guard import Interrupted

        try:
            yield
        except (Cancelled, Interrupted) as stop:
            if not (self.owned and os.path.exists(self.path)):
                raise
            kept = (f"no model was written. The checkpoint of the finished epochs is kept in '{self.path}': run "
                    "again with the same settings and 'Resume an interrupted training' (RESUME) ticked to continue "
                    "from it, or delete it.")
            if isinstance(stop, Cancelled):
                raise Cancelled(f"Cancelled by the user; {kept}") from None
            raise Interrupted(f"Interrupted (Ctrl+C): the run stopped; {kept}") from None


def restore(trainer, checkpoint):
    """Load a checkpoint's state dicts and optimizer state into a freshly built trainer."""
    for name, module in trainer.modules().items():
        module.load_state_dict(checkpoint["state"][name])
    trainer.optimizer.load_state_dict(checkpoint["optimizer"])


def run_stage(trainer, sampler, settings, feedback=None, progress=None, resume_file=None, start_epoch=0,
              history=None, extra=None):
    """Train ``trainer`` from ``start_epoch`` to ``settings.epochs``; returns the loss history (one dict per epoch).

    ``progress(fraction)`` receives the stage's progress (0..1) and checks for cancel; the loop also
    calls ``feedback.check_cancelled()`` before every batch. After every epoch the checkpoint is
    written (when ``resume_file`` is given), so a cancelled or crashed run can continue.
    """
    feedback = feedback or Feedback()
    history = list(history or [])
    epochs = settings.epochs
    with deterministic_algorithms(settings.device):
        for epoch in range(start_epoch, epochs):
            started = time.perf_counter()
            torch.manual_seed(epoch_seed(settings.seed, trainer.number, epoch))
            batches = sampler.epoch_batches(settings.seed, trainer.number, epoch, settings.batch_size,
                                            settings.patches_per_epoch)
            trainer.train_mode()
            sums = {}
            for index, batch in enumerate(batches):
                feedback.check_cancelled()
                terms = trainer.step(torch.from_numpy(batch).to(settings.device))
                if not all(math.isfinite(value) for value in terms.values()):
                    if resume_file is not None and resume_file.owned:  # it would diverge at the same batch again
                        resume_file.remove()
                    raise TrainingDiverged(
                        f"The {trainer.name} training diverged (the loss became NaN or infinite in epoch {epoch + 1}): "
                        "lower LEARNING_RATE, or check the inputs for extreme values."
                    )
                for key, value in terms.items():
                    sums[key] = sums.get(key, 0.0) + value
                if progress is not None:
                    progress((epoch + (index + 1) / len(batches)) / epochs)
            means = {key: value / len(batches) for key, value in sums.items()}
            history.append({"epoch": epoch + 1, **means})
            details = ", ".join(f"{key} {value:.4g}" for key, value in means.items() if key != "loss")
            feedback.info(f"{trainer.name} stage, epoch {epoch + 1}/{epochs}: loss {means['loss']:.5g} ({details}); "
                          f"{time.perf_counter() - started:.1f} s")
            if resume_file is not None:
                resume_file.save(trainer.name, epoch + 1, trainer, history, extra)
    return history
