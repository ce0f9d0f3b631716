"""Command line: `python -m fers_core COMMAND ...` (no QGIS needed)."""

import argparse
import sys

MIN_SCENE_SIDE = 24  # fers_core.synthetic.MIN_SCENE_SIDE (checked there too), without importing GDAL for --help


def _demo_scene(args):
    from .synthetic import write_scene

    scene, truth = write_scene(args.scene, args.truth, rows=args.rows, cols=args.cols, bands=args.bands, seed=args.seed)
    print(f"Demo scene: {scene}\nGround truth: {truth}")


def _auc(args):
    from .detectors.evaluation import evaluate
    from .feedback import PrintFeedback

    class WarningsOnly(PrintFeedback):  # the AUC line is the output; evaluate's warnings still reach stderr
        def info(self, message):
            pass

    result = evaluate([args.scores], args.truth, mask_path=args.mask, feedback=WarningsOnly()).first
    print(f"AUC {result.auc:.4f} over {result.valid_pixels} valid pixels ({result.anomaly_pixels} anomalous)")


def _band_list(text):
    """An argparse type: one BANDS item ('5' or '1-50') as (its text, its band numbers), parsed as the algorithms
    parse BANDS."""
    from .errors import InputError
    from .io.band_list import parse_band_list

    try:
        bands = parse_band_list(text, "--bands")
    except InputError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if not bands:
        raise argparse.ArgumentTypeError("an empty band item: leave --bands out to use every band")
    return text, bands


def _bands(args):
    """The --bands items as one list of band numbers (None: all bands), each band at most once."""
    if not args.bands:
        return None
    from .io.band_list import check_each_band_once

    bands = [band for _, item in args.bands for band in item]
    check_each_band_once(bands, " ".join(text for text, _ in args.bands), parameter="--bands")
    return bands


BANDS_HELP = "1-based bands to use: numbers and ranges, e.g. --bands 1-50 60 (default: every band not marked bad)"
NODATA_HELP = "extra nodata value(s) of every band, besides each raster's own (compared with the stored values)"


def _rx(args):
    from .detectors.global_rx import run_global_rx
    from .feedback import PrintFeedback

    run_global_rx(args.input, args.output, bands=_bands(args), mask_path=args.mask, feedback=PrintFeedback(),
                  nodata=args.nodata)


def _batch(args):
    from .distributed.batch import format_summary, run_batch
    from .feedback import PrintFeedback

    records = run_batch(args.inputs, args.out_dir, detector=args.detector, model_path=args.model,
                        scheduler=args.scheduler, bands=_bands(args), block_mb=args.block_mb, split=args.split,
                        feedback=PrintFeedback(), n_workers=args.workers, threads=args.threads,
                        windows=(args.window_inner, args.window_outer), components=args.components,
                        nodata=args.nodata)
    print(format_summary(records))
    if any(record.status != "ok" for record in records):
        sys.exit(1)


def _at_least(low):
    """An argparse type: a whole number of at least `low`."""
    def whole(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is too small: at least {low}")
        return value
    return whole


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fers_core", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo-scene", help="write the synthetic demo scene and its ground truth")
    demo.add_argument("scene")
    demo.add_argument("truth")
    demo.add_argument("--rows", type=_at_least(MIN_SCENE_SIDE), default=160)
    demo.add_argument("--cols", type=_at_least(MIN_SCENE_SIDE), default=200)
    demo.add_argument("--bands", type=_at_least(3), default=120)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo_scene)

    auc = commands.add_parser("auc", help="ROC AUC of a score raster against a ground-truth raster")
    auc.add_argument("scores")
    auc.add_argument("truth")
    auc.add_argument("--mask", help="pixels to leave out (non-zero), as fers:evaluate's MASK")
    auc.set_defaults(func=_auc)

    rx = commands.add_parser("rx", help="global RX of a raster")
    rx.add_argument("input")
    rx.add_argument("output")
    rx.add_argument("--bands", type=_band_list, nargs="+", help=BANDS_HELP)
    rx.add_argument("--mask")
    rx.add_argument("--nodata", type=float, nargs="+", help=NODATA_HELP)
    rx.set_defaults(func=_rx)

    batch = commands.add_parser(
        "batch", help="detect anomalies in many rasters, in this process or on a Dask cluster",
        description="Writes OUT_DIR/<input name>_<detector>.tif for every INPUT and prints a summary table; "
                    "exits with status 1 when any input failed (the others still run).")
    batch.add_argument("inputs", nargs="+", metavar="INPUT")
    batch.add_argument("--out-dir", required=True)
    batch.add_argument("--detector", choices=["fers", "rx", "local-rx", "rxd-local-mean", "utd", "rxd-utd"],
                       default="fers", help="fers; rx = global RX; local-rx = local (dual-window) RX; rxd-local-mean, "
                                            "utd, rxd-utd = ENVI's variants with the global covariance (fers:rx)")
    batch.add_argument("--window-inner", type=int, default=5,
                       help="local-rx and rxd-local-mean: inner (guard) window, odd pixels (default 5; 0 = no guard "
                            "for rxd-local-mean)")
    batch.add_argument("--window-outer", type=int, default=21,
                       help="local-rx and rxd-local-mean: outer window (the local mean's kernel), odd pixels "
                            "(default 21)")
    batch.add_argument("--components", type=float,
                       help="local-rx: principal components of the global covariance to project onto (a count, or "
                            "a share of variance below 1; default: all bands)")
    batch.add_argument("--model", help="FERS model file or authors' checkpoint folder (default: the bundled "
                                       "fers_default.pt alone; fers:detect's default in QGIS also fuses two spectral "
                                       "models)")
    batch.add_argument("--scheduler", default="",
                       help="empty: in this process; 'local': a Dask cluster on this machine; "
                            "tcp://host:8786: that Dask scheduler")
    batch.add_argument("--split", action="store_true",
                       help="spread each raster's blocks over the cluster (rasters too large for one machine) "
                            "instead of one task per raster")
    batch.add_argument("--bands", type=_band_list, nargs="+", help=BANDS_HELP)
    batch.add_argument("--block-mb", type=int, default=64, help="block memory budget (MB)")
    batch.add_argument("--nodata", type=float, nargs="+", help=NODATA_HELP)
    batch.add_argument("--threads", type=int, default=0,
                       help="BLAS and PyTorch threads per task (default: this process's counts, which keep the "
                            "outputs bit-identical to a run in this process; 1 for the most throughput on a "
                            "cluster of single-threaded workers)")
    batch.add_argument("--workers", type=int, help="worker processes of the 'local' cluster (default: one per core)")
    batch.set_defaults(func=_batch)

    args = parser.parse_args(argv)
    import os

    from .errors import FersError
    from .feedback import PrintFeedback
    from .io.gdal_cache import bounded_gdal_cache
    from .runtime.run_guard import Interrupted, RunGuard

    outputs = {"rx": lambda: [args.output], "batch": lambda: [os.path.join(args.out_dir, "-")],
               "demo-scene": lambda: [args.scene, args.truth]}.get(args.command, list)()
    # Ctrl+C and SIGTERM leave no temporary file and no output of the run (a batch keeps the rasters it finished)
    try:
        with bounded_gdal_cache(), RunGuard(outputs, PrintFeedback(), keep_outputs=args.command == "batch"):
            args.func(args)
    except FersError as error:
        sys.exit(f"Error: {error}")
    except Interrupted as error:
        print(f"Error: {error}", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
