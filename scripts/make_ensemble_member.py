"""Write weights/fers_random200.pt, the second member of the bundled default ensemble.

    .venv/bin/python scripts/make_ensemble_member.py [--output weights/fers_random200.pt]

An untrained spectral network at 200 model bands (fers_core.enhance.model_file.random_init_model, seed 0): the
leave-one-sensor-out protocol (bench/select_protocol.py) picked the rank fusion of the bundled model and
this one. Needs no data; seconds on a CPU.
"""

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BANDS, SEED = 200, 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", default=str(ROOT / "weights" / "fers_random200.pt"))
    args = parser.parse_args(argv)
    from fers_core.enhance.model_file import random_init_model, save_model

    model = random_init_model(BANDS, seed=SEED, branches=("spectral",))
    model.provenance.update({"summary": "FERS for QGIS default ensemble member: random-init spectral network",
                             "command": "make weights (scripts/make_ensemble_member.py)",
                             "selection": "bench/select_protocol.py, leave-one-sensor-out; see weights/README.md"})
    save_model(model, args.output)
    print(f"Wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
