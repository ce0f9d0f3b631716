"""Train the spectral members of the bundled default ensemble, weights/fers_spectral<B>.pt (run by `make weights`).

    .venv/bin/python scripts/train_members.py [--bands 100,200] [--output-dir weights]

Each member is stage 1 of the bundled recipe (scripts/train_default.py RECIPE: frozen-random teacher, 30 epochs of
32 px patches, batch 16, Adam lr 5e-3, seed 0, two threads) at B model bands, trained on every shared training
background raster (scripts/training_pool.py): the background cubes with their bad bands dropped (the 10x10 px
AVIRIS-NG cubes are too small for a patch) and the three background scenes; no development scene (the "bg" pool of
the study, which beat the pool with the masked development scenes). Which band counts, which pool and rank fusion
were chosen by leave-one-sensor-out on the development scenes (bench/band_study.py, bench/BAND_STUDY.md); the
AUCs in the model card come from that study's fold networks, which never saw the scored scene's sensor. The
schedule is fixed (no early stopping, no epoch picking); an interrupted run resumes (<file>.resume.pt).
"""

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from train_default import RECIPE  # noqa: E402
from training_pool import SCENES, TOO_SMALL, catalogue, training_input  # noqa: E402

MEMBER_BANDS = (100, 200)
THREADS = 2
WORK = ROOT / ".run" / "weights"


def stage1_recipe():
    """train_default.RECIPE's stage 1, as TrainOptions fields."""
    return {"seed": RECIPE["seed"], "batch_size": RECIPE["batch_size"], "learning_rate": RECIPE["learning_rate"],
            "teacher": RECIPE["teacher"], **RECIPE["stage1"]}


def member_path(folder, bands):
    return Path(folder) / f"fers_spectral{bands}.pt"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bands", default=",".join(map(str, MEMBER_BANDS)), help="model band counts, comma-separated")
    parser.add_argument("--output-dir", default=str(ROOT / "weights"))
    args = parser.parse_args(argv)
    if not SCENES.is_dir():
        sys.exit(f"The shared data is absent ({SCENES} does not exist beside the project): "
                 "the bundled members can only be trained in the development checkout.")
    import torch

    from fers_core.feedback import PrintFeedback
    from fers_core.training.run import STAGES_SPECTRAL, TrainOptions, train_model

    torch.set_num_threads(THREADS)
    recipe = stage1_recipe()
    entries = catalogue()
    names = [name for name in entries if not name.startswith(TOO_SMALL) and entries[name]["mask"] is None]
    pairs = [training_input(name, entries[name], WORK) for name in names]
    for bands in (int(b) for b in args.bands.split(",") if b.strip()):
        output = member_path(args.output_dir, bands)
        started = time.perf_counter()
        train_model(TrainOptions(
            inputs=[path for path, _ in pairs], output_model=str(output), model_bands=bands,
            stages=STAGES_SPECTRAL, device="cpu", **recipe,
            provenance={"summary": f"FERS for QGIS default ensemble member: trained spectral network, {bands} bands",
                        "command": "make weights (scripts/train_members.py)", "training_rasters": names,
                        "recipe": recipe, "threads": THREADS, "torch_version": str(torch.__version__),
                        "selection": "bench/band_study.py, leave-one-sensor-out; see weights/README.md"}),
            PrintFeedback())
        print(f"Wrote {output} in {(time.perf_counter() - started) / 60:.1f} min.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
