"""The ``synthmed`` command: argument parsing only; every subcommand calls the library.

Errors caused by input (files, config keys, checkpoints) print one line and exit with status 2;
nothing half-written is left behind because the library writes atomically.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from synthmed import __version__
from synthmed.errors import SynthmedError


def _cmd_list(args: argparse.Namespace) -> int:
    from synthmed.config import shipped_configs
    from synthmed.registry import all_registries
    from synthmed.train.steps import STEPS

    regs = all_registries()
    regs["training steps"] = STEPS
    width = max(len(n) for reg in regs.values() for n in reg.names()) + 2
    for title, reg in regs.items():
        print(f"{title}:")
        for name in reg.names():
            print(f"  {name:<{width}}{reg.describe(name)}")
    print("shipped configs:")
    for name in shipped_configs():
        print(f"  {name}")
    return 0


def _cmd_preprocess(args: argparse.Namespace) -> int:
    from synthmed.data.preprocess import PreprocessOptions, run_preprocess
    from synthmed.data.readers import detect_reader

    size = args.size
    if size is None:  # 64^3 for volumes (paper 000); native size for MedMNIST and 2D images
        reader = args.reader if args.reader != "auto" else detect_reader(args.input)
        size = None if reader in ("medmnist", "images") else 64
    opts = PreprocessOptions(
        input=Path(args.input), out=Path(args.out), reader=args.reader, labels_csv=args.labels,
        id_column=args.id_column, label_column=None if args.unlabelled else args.label_column, size=size,
        spacing=args.spacing, register=not args.no_register, trim_background=not args.no_trim, n_folds=args.folds,
        test_fraction=args.test_fraction, seed=args.seed, workers=args.workers, progress=not args.no_progress,
    )
    out = run_preprocess(opts)
    print(f"prepared dataset written to {out}")
    return 0


def _cmd_download_medmnist(args: argparse.Namespace) -> int:
    from synthmed.data.medmnist import download_medmnist

    path = download_medmnist(args.flag, args.size, Path(args.out))
    print(f"downloaded {path}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from synthmed.config import load_config
    from synthmed.train.loop import train

    cfg = load_config(args.config, args.set or [])
    out = train(cfg, args.data, args.out, resume=args.resume, progress=not args.no_progress)
    if os.environ.get("RANK", "0") == "0":
        print(f"run written to {out}")
    return 0


def _cmd_sample(args: argparse.Namespace) -> int:
    from synthmed.generate.sample import sample

    out = sample(args.run, args.n, args.out, seed=args.seed, batch_size=args.batch_size,
                 checkpoint=args.checkpoint, device=args.device, overwrite=args.overwrite,
                 progress=not args.no_progress)
    print(f"{args.n} synthetic images written to {out}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from synthmed.evaluate.fidelity import FidelityOptions
    from synthmed.evaluate.runner import EvaluateOptions, evaluate

    device = args.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    fo = FidelityOptions(extractor=args.extractor, weights=args.weights,
                         extractor_iterations=args.extractor_iterations)
    opts = EvaluateOptions(split=args.split, fold=args.fold, n_sets=args.n_sets, set_size=args.set_size,
                           max_real=args.max_real,
                           fidelity=fo, image_metrics=not args.no_image_metrics, privacy=not args.no_privacy,
                           ssim_queries=args.ssim_queries, embeddings=tuple(args.embeddings),
                           reconstruct=args.reconstruct, inception_weights=args.inception_weights,
                           screenshot=not args.no_screenshot, device=device, seed=args.seed,
                           batch_size=args.batch_size, progress=not args.no_progress)
    html = evaluate(args.real, args.synthetic, args.out, opts, names=args.names)
    print(f"report written to {html} (numbers in {html.parent / 'metrics.json'})")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from synthmed.demo import run_demo

    out = run_demo(Path(args.out), quick=args.quick, data=Path(args.data) if args.data else None,
                   label_column=args.label_column, device=args.device, progress=not args.no_progress,
                   overrides=args.set or [])
    print(f"demo finished; see {out / 'report' / 'report.html'} and {out / 'comparison.png'}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from synthmed.bench import format_table, run_bench

    rows = run_bench(args.models, args.sizes, args.batch_sizes, args.spatial_dims, args.iterations, args.warmup,
                     args.device, args.precision, Path(args.out) if args.out else None)
    print(format_table(rows))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="synthmed", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--version", action="version", version=f"synthmed {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("list", help="print every registry and the shipped configs")
    s.set_defaults(func=_cmd_list)

    s = sub.add_parser("preprocess", help="raw files → prepared dataset (tensors, manifest, splits)")
    s.add_argument("input", help="BIDS folder, NIfTI folder, DICOM folder, image folder or MedMNIST .npz")
    s.add_argument("--out", required=True, help="prepared dataset folder to write")
    s.add_argument("--reader", default="auto", help="auto, bids, nifti, dicom, images or medmnist")
    s.add_argument("--labels", help="CSV of labels (nifti/dicom readers)")
    s.add_argument("--id-column", default="subject_id", help="subject id column of --labels")
    s.add_argument("--label-column", default="label", help="label column of participants.tsv (BIDS) or --labels")
    s.add_argument("--unlabelled", action="store_true", help="ignore labels")
    s.add_argument("--size", type=int, default=None,
                   help="target grid edge length (default: 64 for volumes, 3D 32..256; native for MedMNIST/2D images)")
    s.add_argument("--spacing", type=float, default=2.0, help="resampling spacing in mm for 3D (default 2)")
    s.add_argument("--no-register", action="store_true", help="skip affine registration to MNI152")
    s.add_argument("--no-trim", action="store_true", help="keep background-only slices")
    s.add_argument("--folds", type=int, default=5, help="cross-validation folds in splits.json")
    s.add_argument("--test-fraction", type=float, default=0.2, help="held-out test fraction")
    s.add_argument("--seed", type=int, default=0, help="split seed")
    s.add_argument("--workers", type=int, default=1, help="processes for per-subject 3D steps")
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(func=_cmd_preprocess)

    s = sub.add_parser("download-medmnist", help="fetch an official MedMNIST .npz (needs internet; MD5-checked)")
    s.add_argument("flag", help="dataset flag, e.g. adrenalmnist3d, breastmnist")
    s.add_argument("--size", type=int, default=None, help="28 (default), 64, 128 or 224 (MedMNIST+)")
    s.add_argument("--out", required=True, help="folder to write the .npz into")
    s.set_defaults(func=_cmd_download_medmnist)

    s = sub.add_parser("train", help="train a generative model on a prepared dataset")
    s.add_argument("config", help="YAML path or shipped config name (see `synthmed list`)")
    s.add_argument("--data", required=True, help="prepared dataset folder")
    s.add_argument("--out", required=True, help="run folder to write")
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key, e.g. train.iterations=100")
    s.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(func=_cmd_train)

    s = sub.add_parser("sample", help="generate a synthetic cohort from a trained run")
    s.add_argument("run", help="run folder written by `synthmed train`")
    s.add_argument("--n", type=int, required=True, help="number of images")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--seed", type=int, default=0, help="sample i uses seed SEED+i")
    s.add_argument("--batch-size", type=int, default=8)
    s.add_argument("--checkpoint", help="checkpoint file (default RUN/checkpoints/last.pt)")
    s.add_argument("--device", default="auto")
    s.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(func=_cmd_sample)

    s = sub.add_parser("evaluate", help="fidelity, diversity, privacy and pictures of synthetic cohorts → HTML report")
    s.add_argument("--real", required=True, help="prepared dataset folder")
    s.add_argument("--synthetic", required=True, nargs="+",
                   help="folder(s) written by `synthmed sample`, or run folder(s) to sample on the fly")
    s.add_argument("--names", nargs="+", help="display names of the synthetic sources (default: folder names)")
    s.add_argument("--out", required=True, help="report folder (report.html, metrics.json, figures/)")
    s.add_argument("--split", default="all", choices=["all", "trainval", "test", "train", "val"],
                   help="real images to compare with (default all, as paper 000)")
    s.add_argument("--fold", type=int, default=0, help="fold for --split train/val")
    s.add_argument("--n-sets", type=int, default=10, help="synthetic sets per run folder (paper 000: 10)")
    s.add_argument("--set-size", type=int, help="images per synthetic set (default: as many as real images)")
    s.add_argument("--max-real", type=int, help="a seeded random subset of at most this many real images")
    s.add_argument("--extractor", default="indomain-ae", help="feature extractor (see `synthmed list`)")
    s.add_argument("--weights", help="local weights file of the extractor (default indomain-ae: trained here)")
    s.add_argument("--extractor-iterations", type=int, default=1000, help="training iterations of indomain-ae")
    s.add_argument("--no-image-metrics", action="store_true", help="skip paper 002's image-space metrics")
    s.add_argument("--no-privacy", action="store_true", help="skip nearest-neighbour/DCR/membership analysis")
    s.add_argument("--ssim-queries", type=int, default=32, help="synthetic images searched by SSIM (0: none)")
    s.add_argument("--embeddings", nargs="*", default=["pca", "mds"], choices=["pca", "mds"])
    s.add_argument("--reconstruct", action="store_true", help="reconstruction MSE/sharpness (models with an encoder)")
    s.add_argument("--inception-weights", help="Inception-v3 weights file: Inception score on the middle planes")
    s.add_argument("--no-screenshot", action="store_true", help="do not render the report in headless Chromium")
    s.add_argument("--device", default="auto")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--batch-size", type=int, default=8)
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(func=_cmd_evaluate)

    s = sub.add_parser("bench", help="seconds per training iteration and peak memory per model/size/batch")
    s.add_argument("--models", nargs="+", default=["sngan", "alpha_sngan"], help="shipped config names")
    s.add_argument("--sizes", nargs="+", type=int, default=[32, 64])
    s.add_argument("--batch-sizes", nargs="+", type=int, default=[4])
    s.add_argument("--spatial-dims", type=int, default=3, choices=[2, 3])
    s.add_argument("--iterations", type=int, default=5, help="timed iterations")
    s.add_argument("--warmup", type=int, default=2, help="untimed iterations first")
    s.add_argument("--device", default="cpu")
    s.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    s.add_argument("--out", help="CSV file to write")
    s.set_defaults(func=_cmd_bench)

    s = sub.add_parser("demo", help="the whole path in miniature: prepare, train alpha-SN-GAN, sample, compare")
    s.add_argument("--out", required=True, help="demo output folder")
    s.add_argument("--quick", action="store_true", help="toy size, under 2 minutes on 2 CPU cores")
    s.add_argument("--data", help="real data instead of the built-in phantom cohort (any `preprocess` input)")
    s.add_argument("--label-column", default=None, help="label column for --data (e.g. group)")
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help="override the demo's training config")
    s.add_argument("--device", default="auto")
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(func=_cmd_demo)

    from synthmed.reader.cli import add_parser as add_reader_parser
    add_reader_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except SynthmedError as e:
        print(f"synthmed: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("synthmed: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
