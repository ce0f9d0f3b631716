"""Command line: `python -m fers_core COMMAND ...` (no QGIS needed)."""

import argparse
import sys

import numpy as np


def _demo_scene(args):
    from .synthetic import write_scene

    scene, truth = write_scene(args.scene, args.truth, rows=args.rows, cols=args.cols, bands=args.bands, seed=args.seed)
    print(f"Demo scene: {scene}\nGround truth: {truth}")


def _auc(args):
    from .metrics import roc_auc
    from .raster_io import RasterReader, Window

    with RasterReader(args.scores, [1]) as scores, RasterReader(args.truth, [1]) as truth:
        if (scores.width, scores.height) != (truth.width, truth.height):
            sys.exit(f"Scores are {scores.width}x{scores.height} but the truth is {truth.width}x{truth.height}.")
        window = Window(0, 0, scores.height, scores.width)
        values, valid = scores.read(window)
        labels = truth.read(window)[0][0]
    auc = roc_auc(values[0][valid], labels[valid])
    print(f"AUC {auc:.4f} over {int(valid.sum())} valid pixels ({int(np.count_nonzero(labels[valid]))} anomalous)")


def _rx(args):
    from .feedback import PrintFeedback
    from .rx_raster import run_global_rx

    run_global_rx(args.input, args.output, bands=args.bands, mask_path=args.mask, feedback=PrintFeedback())


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fers_core", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo-scene", help="write the synthetic demo scene and its ground truth")
    demo.add_argument("scene")
    demo.add_argument("truth")
    demo.add_argument("--rows", type=int, default=160)
    demo.add_argument("--cols", type=int, default=200)
    demo.add_argument("--bands", type=int, default=120)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo_scene)

    auc = commands.add_parser("auc", help="ROC AUC of a score raster against a ground-truth raster")
    auc.add_argument("scores")
    auc.add_argument("truth")
    auc.set_defaults(func=_auc)

    rx = commands.add_parser("rx", help="global RX of a raster")
    rx.add_argument("input")
    rx.add_argument("output")
    rx.add_argument("--bands", type=int, nargs="+")
    rx.add_argument("--mask")
    rx.set_defaults(func=_rx)

    args = parser.parse_args(argv)
    from .errors import FersError

    try:
        args.func(args)
    except FersError as error:
        sys.exit(f"Error: {error}")


if __name__ == "__main__":
    main()
