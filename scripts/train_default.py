"""Train the bundled default model weights/fers_default.pt (run by `make weights`).

    .venv/bin/python scripts/train_default.py [--output weights/fers_default.pt]

Data: the background-only scenes of ../shared/data/scenes (relative to the project root), declared
in TRAIN_SCENES. Every scene with a ground truth is left out of training and kept for evaluation
(bench/evaluate.py reads the training inputs from the model file and evaluates all the others).
No evaluation label is read here: the schedule is fixed (no early stopping, no epoch picking).

Recipe (see weights/README.md for why): a 50-band model, stage 1 with the frozen random teacher
at 32 px patches, stage 2 (spatial student) on top at 32 px patches, seed 0, Adam lr 5e-3 betas
(0.5, 0.999), batch 16, two CPU threads; the spatial tensors are stored as float16 so that the file
stays under 20 MB. An interrupted run continues where it stopped (each stage
checkpoints to <file>.resume.pt every epoch). Same machine, same result.
"""

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCENES = ROOT.parent / "shared" / "data" / "scenes"
TRAIN_SCENES = ("jasper-ridge", "samson", "hydice-urban-sub")
STAGE1_FILE = ROOT / ".run" / "weights" / "fers_default.stage1.pt"
RECIPE = {
    "model_bands": 50,
    "seed": 0,
    "batch_size": 16,
    "learning_rate": 5e-3,
    "teacher": "frozen-random",
    "stage1": {"epochs": 30, "patch_size": 32},
    "stage2": {"epochs": 40, "patch_size": 32},
}
THREADS = 2
FLOAT16_BRANCHES = ("spatial",)
sys.path.insert(0, str(ROOT))


MIXED_PRECISION_NOTE = ("detection AUC within 0.00025 of float32 on the 11 labelled shared scenes under 'mixed' "
                        "precision (bench/PRECISION_RESULTS.md); re-measure when the recipe changes")


def finish_model_file(path, branches=FLOAT16_BRANCHES):
    """Rewrite the trained model file once: the floating-point tensors of ``branches`` in float16, and
    the record that this recipe's AUC was checked under "mixed" precision.

    The spatial branch (a ResNet-34 trunk, 8 M parameters) would take 33 MB in float32; in float16 the
    whole file stays under 20 MB. Loading converts the tensors back to float32 (load_state_dict
    copies into the float32 networks); the spectral branch stays float32. The mixed-precision record
    lets fers:detect's PRECISION auto run the encoder and trunk in bfloat16 (other models run float32).
    """
    import os

    import torch

    from fers_core.enhance.precision import MIXED_PRECISION_CHECKED

    content = torch.load(path, weights_only=True)
    for branch in branches:
        tensors = content["state_dicts"][branch]
        content["state_dicts"][branch] = {key: value.half() if value.is_floating_point() else value
                                          for key, value in tensors.items()}
    content["provenance"]["storage"] = f"{', '.join(branches)} tensors stored as float16 (loaded as float32)"
    content["provenance"][MIXED_PRECISION_CHECKED] = MIXED_PRECISION_NOTE
    temporary = f"{path}.finish.tmp"
    torch.save(content, temporary)
    os.replace(temporary, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", default=str(ROOT / "weights" / "fers_default.pt"))
    args = parser.parse_args(argv)
    if not SCENES.is_dir():
        sys.exit(f"The shared scenes are absent ({SCENES} does not exist beside the project): "
                 "the default model can only be trained in the development checkout.")
    import torch

    from fers_core.feedback import PrintFeedback
    from fers_core.training.run import STAGES_SPATIAL, STAGES_SPECTRAL, TrainOptions, train_model

    torch.set_num_threads(THREADS)
    inputs = [str(SCENES / f"{name}.tif") for name in TRAIN_SCENES]
    STAGE1_FILE.parent.mkdir(parents=True, exist_ok=True)
    feedback = PrintFeedback()
    started = time.perf_counter()
    common = {"inputs": inputs, "model_bands": RECIPE["model_bands"], "seed": RECIPE["seed"],
              "batch_size": RECIPE["batch_size"], "learning_rate": RECIPE["learning_rate"], "device": "cpu"}
    provenance = {
        "summary": "FERS for QGIS bundled default model",
        "command": "make weights",
        "training_scenes": list(TRAIN_SCENES),
        "stages": "stage 1 (spectral, frozen-random teacher) into .run/weights/fers_default.stage1.pt, then stage 2 "
                  "(spatial) on top with the spectral branch frozen",
        "evaluation": "every scene with a ground truth in shared/data/scenes: none is used for training or for "
                      "picking epochs (fixed schedule); see weights/README.md",
        "recipe": RECIPE,
        "threads": THREADS,
        "torch_version": str(torch.__version__),
        "spatial_backbone_initialisation": "torchvision ResNet initialisation (Kaiming normal, fan-out), no ImageNet",
    }
    stage1 = train_model(TrainOptions(
        **common, output_model=str(STAGE1_FILE), stages=STAGES_SPECTRAL, teacher=RECIPE["teacher"],
        **RECIPE["stage1"]), feedback)
    stage2 = train_model(TrainOptions(
        **common, output_model=args.output, stages=STAGES_SPATIAL, init_model=str(STAGE1_FILE),
        provenance={**provenance, "stage1_seconds": round(stage1.seconds, 1),
                    "stage1_loss_history": [round(e["loss"], 6) for e in stage1.history["spectral"]]},
        **RECIPE["stage2"]), feedback)
    finish_model_file(args.output)
    minutes = (time.perf_counter() - started) / 60
    print(f"Wrote {args.output} in {minutes:.1f} min (stage 1 {stage1.seconds / 60:.1f} min, "
          f"stage 2 {stage2.seconds / 60:.1f} min).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
