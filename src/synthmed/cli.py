"""The ``synthmed`` command: argument parsing only; every subcommand calls the library.

Errors caused by input (files, config keys, checkpoints) print one line and exit with status 2;
nothing half-written is left behind because the library writes atomically.  So do OS errors (a
read-only or full disk under --out): one line naming the path and the reason.  A missing parent
folder of --out is created.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from synthmed import __version__
from synthmed.errors import SynthmedError


def truncation_arg(text: str) -> float | None:
    """argparse type of ``--truncation``: a threshold > 0, or ``none`` (no truncation)."""
    if text.strip().lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0 or 'none', got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a number > 0 (standard deviations) or 'none', got {text!r}")
    return value


def _int_at_least(minimum: int):
    """argparse type: an integer >= ``minimum``."""

    expected = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


positive_int = _int_at_least(1)
non_negative_int = _int_at_least(0)

#: help text of the ``--device`` options that default to ``auto``
DEVICE_HELP = "auto (CUDA when available), cpu, cuda or cuda:N"


def add_command(sub: argparse._SubParsersAction, name: str, help: str, example: Sequence[str],
                description: str | None = None) -> argparse.ArgumentParser:
    """Add subcommand ``name`` to ``sub``: ``help`` is its line in the parent's list (and its
    description), ``example`` the command lines that end its ``--help``."""
    return sub.add_parser(name, help=help, description=description or help.replace("%%", "%"),
                          epilog="example:\n" + "\n".join(f"  {line}" for line in example),
                          formatter_class=argparse.RawDescriptionHelpFormatter)


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
    for kind in ("run", "utility", "protocol"):
        print(f"shipped {kind} configs:" if kind != "run" else "shipped configs (synthmed train):")
        for name in shipped_configs(kind):
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
        allow_missing_slices=args.allow_missing_slices,
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
                 progress=not args.no_progress, labels=args.label, labels_from=args.labels_from,
                 ema=not args.no_ema, truncation=getattr(args, "truncation", "config"),
                 prior=args.prior or "config", prior_components=args.prior_components, prior_data=args.prior_data)
    print(f"synthetic images written to {out}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from synthmed.evaluate.fidelity import FidelityOptions
    from synthmed.evaluate.runner import EvaluateOptions, evaluate

    device = args.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    fo = FidelityOptions(extractor=args.extractor, weights=args.weights,
                         extractor_iterations=args.extractor_iterations, extractor_size=args.extractor_size,
                         n_boot=args.n_boot)
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


def _cmd_utility(args: argparse.Namespace) -> int:
    from synthmed.utility import load_utility_config, run_utility

    cfg = load_utility_config(args.config, args.set or [])
    html = run_utility(cfg, args.out, resume=args.resume, progress=not args.no_progress)
    print(f"utility report written to {html} (per-fold numbers in {html.parent / 'per_fold_metrics.csv'})")
    return 0


def _cmd_protocol(args: argparse.Namespace) -> int:
    from synthmed.protocol import load_protocol_config, run_protocol

    cfg = load_protocol_config(args.config, args.set or [])
    html = run_protocol(cfg, args.out, resume=args.resume, progress=not args.no_progress)
    print(f"protocol report written to {html} (numbers in {html.parent / 'metrics.json'})")
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
                     args.device, args.precision, Path(args.out) if args.out else None,
                     channels_last=args.channels_last, compile=args.compile)
    print(format_table(rows))
    return 0


def _cmd_encode(args: argparse.Namespace) -> int:
    from synthmed.latent import encode_dataset, save_codes

    codes = encode_dataset(args.run, args.data, subset=args.subset, fold=args.fold, batch_size=args.batch_size,
                           checkpoint=args.checkpoint, device=args.device, progress=not args.no_progress)
    print(f"{len(codes)} latent codes ({codes.codes.shape[1]} dims) written to {save_codes(codes, args.out)}")
    return 0


def _cmd_latent(args: argparse.Namespace) -> int:
    from synthmed.latent import format_ridge_table, ridge_report, traverse_run
    from synthmed.latent.regression import check_alpha

    if args.latent_command == "ridge":
        alphas = [check_alpha(a) for a in args.alpha]
        res = ridge_report(args.codes, args.data, args.properties, alphas, args.folds, args.log, args.seed,
                           args.permutations, args.participants, args.out)
        print(format_ridge_table(res))
    else:
        trav = traverse_run(args.run, args.codes, args.data, args.property, args.out, steps=args.steps, seed=args.seed,
                            alpha=args.alpha, table=args.participants, checkpoint=args.checkpoint, device=args.device,
                            reference=args.reference)
        measured = "" if trav.measured is None else f"; measured {', '.join(f'{v:.1f}' for v in trav.measured)}"
        print(f"traversal written to {args.out} (targets {', '.join(f'{v:.1f}' for v in trav.targets)}{measured})")
    return 0


def _cmd_reference(args: argparse.Namespace) -> int:
    from synthmed import reference as ref

    if args.reference_command == "list":
        print(ref.list_text(Path(args.data_root)))
    elif args.reference_command == "run":
        opts = ref.ReferenceOptions(work=Path(args.work), data_root=Path(args.data_root),
                                    data=Path(args.data) if args.data else None, overrides=args.set or [],
                                    n_sets=args.n_sets, device=args.device,
                                    extractor_iterations=args.extractor_iterations, seed=args.seed,
                                    batch_size=args.batch_size, progress=not args.no_progress)
        result = ref.run_reference(args.name, opts)
        print(ref.summary_text(result))
        print(f"result written to {Path(args.work) / 'runs' / args.name / 'reference' / 'result.json'}")
    else:
        text = ref.results_table(args.dirs, args.out)
        if args.out:
            print(f"table of {len(text.splitlines()) - 2} run(s) written to {args.out}")
        else:
            print(text, end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="synthmed", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train 3D/2D generative models on small labelled medical image cohorts, synthesise labelled "
                    "cohorts and measure what they are worth. `synthmed COMMAND --help` explains each command.",
        epilog="example:\n  synthmed demo --quick --out demo_quick\n  synthmed train --help")
    p.add_argument("--version", action="version", version=f"synthmed {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    sub = p.add_subparsers(dest="command", required=True)

    s = add_command(sub, "list", "print every registry and the shipped configs", ["synthmed list"])
    s.set_defaults(func=_cmd_list)

    s = add_command(sub, "preprocess", "raw files → prepared dataset (tensors, manifest, splits)",
                       ["synthmed preprocess ../shared/data/ds002748-t1w-2mm --label-column group --out prepared/ds002748"])
    s.add_argument("input", help="BIDS folder, NIfTI folder, DICOM folder, image folder or MedMNIST .npz")
    s.add_argument("--out", required=True, help="prepared dataset folder to write")
    s.add_argument("--reader", default="auto", help="auto, bids, nifti, dicom, images or medmnist")
    s.add_argument("--labels", help="CSV of labels (nifti/dicom readers)")
    s.add_argument("--id-column", default="subject_id", help="subject id column of --labels")
    s.add_argument("--label-column", default="label", help="label column of participants.tsv (BIDS) or --labels")
    s.add_argument("--unlabelled", action="store_true", help="ignore labels")
    s.add_argument("--size", type=int, default=None,
                   help="target grid edge length (default: 64 for volumes; 3D at most 256, NIfTI/DICOM/BIDS 32..256; "
                        "native for MedMNIST/2D images)")
    s.add_argument("--spacing", type=float, default=2.0, help="resampling spacing in mm for 3D (default 2)")
    s.add_argument("--no-register", action="store_true", help="skip affine registration to MNI152")
    s.add_argument("--no-trim", action="store_true", help="keep background-only slices")
    s.add_argument("--folds", type=int, default=5, help="cross-validation folds in splits.json")
    s.add_argument("--test-fraction", type=float, default=0.2, help="held-out test fraction")
    s.add_argument("--seed", type=int, default=0, help="split seed")
    s.add_argument("--workers", type=int, default=1, help="processes for per-subject 3D steps")
    s.add_argument("--allow-missing-slices", action="store_true",
                   help="DICOM: resample series with a missing or unreadable slice (non-uniform slice positions) "
                        "onto a uniform grid instead of refusing them; recorded in manifest.csv and dataset.json")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(func=_cmd_preprocess)

    s = add_command(sub, "download-medmnist", "fetch an official MedMNIST .npz (needs internet; MD5-checked)",
                       ["synthmed download-medmnist breastmnist --out data/medmnist"])
    s.add_argument("flag", help="dataset flag, e.g. adrenalmnist3d, breastmnist")
    s.add_argument("--size", type=int, default=None, help="28 (default), 64, 128 or 224 (MedMNIST+)")
    s.add_argument("--out", required=True, help="folder to write the .npz into")
    s.set_defaults(func=_cmd_download_medmnist)

    s = add_command(sub, "train", "train a generative model on a prepared dataset", [
        "synthmed train alpha_sngan --data prepared/ds002748 --out runs/alpha_sngan --set train.iterations=2000",
        "torchrun --standalone --nproc_per_node 4 -m synthmed train alpha_sngan --data prepared/ds002748 --out runs/ddp"])
    s.add_argument("config", help="YAML path or shipped config name (see `synthmed list`)")
    s.add_argument("--data", required=True, help="prepared dataset folder")
    s.add_argument("--out", required=True, help="run folder to write")
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key, e.g. train.iterations=100")
    s.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint, with its own settings (only "
                        "train.iterations and the logging/preview/checkpoint intervals may change; see the training guide)")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(func=_cmd_train)

    s = add_command(sub, "sample", "generate a synthetic cohort from a trained run", [
        "synthmed sample runs/alpha_sngan --n 100 --out synthetic/alpha_sngan",
        "synthmed sample runs/conditional --n 300 --label depr --label control --out synthetic/balanced",
        "synthmed sample runs/vae --n 100 --prior gmm --out synthetic/vae_gmm"])
    s.add_argument("run", help="run folder written by `synthmed train`")
    s.add_argument("--n", type=positive_int, help="number of images (optional with --labels-from)")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--seed", type=non_negative_int, default=0, help="sample i uses seed SEED+i")
    s.add_argument("--label", action="append", metavar="L",
                   help="conditional runs: class name or index (repeat; assigned in turn, so the repeats set the "
                        "balance); multi-label: findings joined with '+'")
    s.add_argument("--labels-from", metavar="CSV", help="conditional runs: one label per row, or class,count rows")
    s.add_argument("--batch-size", type=positive_int, default=8, help="images generated per forward pass")
    s.add_argument("--checkpoint", help="checkpoint file (default RUN/checkpoints/last.pt)")
    s.add_argument("--no-ema", action="store_true",
                   help="runs trained with train.ema_kimg > 0: sample the raw generator instead of its weight average")
    s.add_argument("--truncation", type=truncation_arg, default=argparse.SUPPRESS, metavar="PSI",
                   help="truncation trick (BigGAN): redraw latent components beyond PSI standard deviations; lower "
                        "PSI trades variety (recall) for fidelity (precision); 'none' turns off the run's "
                        "sample.truncation (default: the run's sample.truncation, usually none)")
    s.add_argument("--prior", choices=("standard", "gmm"),
                   help="VAEs: draw latent codes from N(0, I) ('standard') or from a Gaussian mixture fitted to the "
                        "posterior means of the run's training images ('gmm', ex-post density estimation, Ghosh et "
                        "al. 2020; fitted once, cached in RUN/prior/) (default: the run's sample.prior, usually standard)")
    s.add_argument("--prior-components", type=positive_int, metavar="K",
                   help="components of the gmm prior (default: the run's sample.prior_components, 10)")
    s.add_argument("--prior-data", metavar="DIR",
                   help="the prepared folder the run was trained on, when it has moved (default: the path in "
                        "RUN/data.json)")
    s.add_argument("--device", default="auto", help=DEVICE_HELP)
    s.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(func=_cmd_sample)

    s = add_command(sub, "evaluate", "fidelity, diversity, privacy and pictures of synthetic cohorts → HTML report",
                       ["synthmed evaluate --real prepared/ds002748 --synthetic synthetic/alpha_sngan runs/sngan --out reports/eval"])
    s.add_argument("--real", required=True, help="prepared dataset folder")
    s.add_argument("--synthetic", required=True, nargs="+",
                   help="folder(s) written by `synthmed sample`, or run folder(s) to sample on the fly")
    s.add_argument("--names", nargs="+", help="display names of the synthetic sources (default: folder names)")
    s.add_argument("--out", required=True, help="report folder (report.html, metrics.json, figures/)")
    s.add_argument("--split", default="test", choices=["all", "trainval", "test", "train", "val"],
                   help="real images to compare with (default test: images no generator trained on, with the "
                        "real trainval images as the floor; 'all' as paper 000 includes the training images)")
    s.add_argument("--n-boot", type=int, default=100,
                   help="bootstrap replicates of the 95%% intervals (at most ~500 metric evaluations in all)")
    s.add_argument("--fold", type=int, default=0, help="fold for --split train/val")
    s.add_argument("--n-sets", type=int, default=10, help="synthetic sets per run folder (paper 000: 10)")
    s.add_argument("--set-size", type=int, help="images per synthetic set (default: as many as real images)")
    s.add_argument("--max-real", type=int, help="a seeded random subset of at most this many real images")
    s.add_argument("--extractor", default="indomain-ae", help="feature extractor (see `synthmed list`)")
    s.add_argument("--weights", help="local weights file of the extractor (default indomain-ae: trained here)")
    s.add_argument("--extractor-iterations", type=int, default=1000, help="training iterations of indomain-ae")
    s.add_argument("--extractor-size", type=int, default=None,
                   help="largest side of indomain-ae's input (default 32 for volumes, 64 for 2D; 0 = native)")
    s.add_argument("--no-image-metrics", action="store_true", help="skip paper 002's image-space metrics")
    s.add_argument("--no-privacy", action="store_true", help="skip nearest-neighbour/DCR/membership analysis")
    s.add_argument("--ssim-queries", type=int, default=32, help="synthetic images searched by SSIM (0: none)")
    s.add_argument("--embeddings", nargs="*", default=["pca", "mds"], choices=["pca", "mds"],
                   help="embeddings of real and synthetic features to plot (the flag alone: none)")
    s.add_argument("--reconstruct", action="store_true", help="reconstruction MSE/sharpness (models with an encoder)")
    s.add_argument("--inception-weights", help="Inception-v3 weights file: Inception score on the middle planes")
    s.add_argument("--no-screenshot", action="store_true", help="do not render the report in headless Chromium")
    s.add_argument("--device", default="auto", help=DEVICE_HELP)
    s.add_argument("--seed", type=int, default=0, help="seed of the synthetic sets sampled from run folders and of --max-real")
    s.add_argument("--batch-size", type=int, default=8, help="images per forward pass")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(func=_cmd_evaluate)

    s = add_command(sub, "utility", "diagnosis classifier on real / augmented / mixed / synthetic training sets, "
                                    "tested on real data, cross-validated, with statistics (paper 000)",
                    ["synthmed utility utility_quick --out utility_out --set data.path=prepared/ds002748 "
                     "--set synthetic.depr=runs/depr --set synthetic.control=runs/control"])
    s.add_argument("config", help="YAML path or shipped utility config (utility_quick, utility_paper000)")
    s.add_argument("--out", required=True, help="output folder (report.html, metrics.json, CSVs, folds/)")
    s.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config key, e.g. data.path=prepared/ds or synthetic.depr=runs/depr")
    s.add_argument("--resume", action="store_true", help="continue a run in --out; finished folds are kept")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(func=_cmd_utility)

    s = add_command(sub, "protocol", "the whole pipeline from one config: candidates, evaluation and ranking, "
                                     "utility of the winner, paper 004 sweeps, one report",
                    ["synthmed protocol protocol_quick --out protocol_out --set data.path=prepared/ds002748"])
    s.add_argument("config", help="YAML path or shipped protocol config (protocol_quick, protocol_paper000)")
    s.add_argument("--out", required=True, help="output folder (report.html, metrics.json, CSVs, every stage)")
    s.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config key, e.g. data.path=prepared/ds or sweeps.seeds=[0,1]")
    s.add_argument("--resume", action="store_true", help="continue a run in --out; finished stages are kept")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(func=_cmd_protocol)

    s = add_command(sub, "bench", "seconds per training iteration and peak memory per model/size/batch", [
        "synthmed bench --models sngan alpha_sngan --sizes 32 64 --out bench.csv",
        "synthmed bench --device cuda --precision bf16 --channels-last --compile --out gpu.csv"])
    s.add_argument("--models", nargs="+", default=None,
                   help="shipped config or model names (default: every registered model for --spatial-dims)")
    s.add_argument("--sizes", nargs="+", type=int, default=[32, 64], help="image edge lengths to measure")
    s.add_argument("--batch-sizes", nargs="+", type=int, default=[4], help="batch sizes to measure")
    s.add_argument("--spatial-dims", type=int, default=3, choices=[2, 3], help="2D images or 3D volumes")
    s.add_argument("--iterations", type=int, default=5, help="timed iterations")
    s.add_argument("--warmup", type=int, default=2, help="untimed iterations first")
    s.add_argument("--device", default="cpu", help="device to measure on: cpu, cuda or cuda:N")
    s.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"],
                   help="mixed precision; other than fp32 also measures fp32 eager for the ratios")
    s.add_argument("--channels-last", action="store_true", help="also measure channels_last(_3d) memory format")
    s.add_argument("--compile", action="store_true", help="also measure torch.compile")
    s.add_argument("--out", help="CSV file to write")
    s.set_defaults(func=_cmd_bench)

    s = add_command(sub, "encode", "latent codes of real images from a trained model's encoder (.npz or .csv)",
                       ["synthmed encode runs/alpha_hagan --data prepared/ds002748 --out codes.npz"])
    s.add_argument("run", help="run folder of a model with an encoder (alpha_sngan, hagan, alpha_hagan, VAEs)")
    s.add_argument("--data", required=True, help="prepared dataset folder")
    s.add_argument("--out", required=True, help="codes file to write (.npz or .csv)")
    s.add_argument("--subset", default="all", choices=["all", "trainval", "test", "train", "val"],
                   help="rows of the prepared split to encode")
    s.add_argument("--fold", type=int, default=0, help="fold for --subset train/val")
    s.add_argument("--checkpoint", help="checkpoint file (default RUN/checkpoints/last.pt)")
    s.add_argument("--batch-size", type=int, default=4, help="images per forward pass")
    s.add_argument("--device", default="auto", help=DEVICE_HELP)
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(func=_cmd_encode)

    s = add_command(sub, "latent", "ridge R^2 of measured properties from latent codes; latent-direction traversal",
                       ["synthmed latent ridge codes.npz --data prepared/ds002748 --properties age total_brain_volume --log"])
    lat = s.add_subparsers(dest="latent_command", required=True)
    r = add_command(lat, "ridge", "cross-validated ridge regression R^2 (paper 001, Table VI)",
                    ["synthmed latent ridge codes.npz --data prepared/ds002748 --properties age total_brain_volume "
                     "--permutations 200"])
    r.add_argument("codes", help="codes file written by `synthmed encode`")
    r.add_argument("--data", required=True, help="the prepared dataset the codes were computed from")
    r.add_argument("--properties", nargs="+", default=["age", "total_brain_volume"],
                   help="image properties (total_brain_volume, native_brain_volume, ventricle_volume) or columns "
                        "of participants.tsv (e.g. age)")
    r.add_argument("--participants", help="subject table (TSV/CSV; default: participants.tsv of the BIDS input)")
    r.add_argument("--alpha", nargs="+", default=["0.0001"], help="ridge penalties, or cv (default 1e-4, paper 001)")
    r.add_argument("--folds", type=int, default=5, help="cross-validation folds")
    r.add_argument("--log", action="store_true", help="predict the logarithm (paper 001)")
    r.add_argument("--permutations", type=int, default=0, help="permutation test with this many shuffles")
    r.add_argument("--seed", type=int, default=0, help="seed of the folds and the permutations")
    r.add_argument("--out", help="JSON file to write")
    t = add_command(lat, "traverse", "images along the latent direction of a property (paper 001, Sec. IV-E)",
                    ["synthmed latent traverse runs/alpha_hagan --codes codes.npz --data prepared/ds002748 "
                     "--property total_brain_volume --out traverse.png"])
    t.add_argument("run", help="run folder the codes were encoded with")
    t.add_argument("--codes", required=True, help="codes file written by `synthmed encode`")
    t.add_argument("--data", required=True, help="the prepared dataset the codes were computed from")
    t.add_argument("--property", default="total_brain_volume", help="property whose direction is traversed")
    t.add_argument("--participants", help="subject table for non-image properties")
    t.add_argument("--out", required=True, help="PNG to write (numbers in the .json beside it)")
    t.add_argument("--steps", type=int, default=7, help="images from the 5th to the 95th percentile of real values")
    t.add_argument("--alpha", type=float, default=1e-4, help="ridge penalty of the direction's linear model")
    t.add_argument("--reference", choices=("prior", "codes-mean"), default="prior",
                   help="start code: a sample of the prior (paper 001, default) or the mean code of the real images")
    t.add_argument("--seed", type=int, default=0, help="seed of the reference code")
    t.add_argument("--checkpoint", help="checkpoint file (default RUN/checkpoints/last.pt)")
    t.add_argument("--device", default="auto", help=DEVICE_HELP)
    s.set_defaults(func=_cmd_latent)

    s = add_command(sub, "demo", "the whole path in miniature: prepare, train alpha-SN-GAN, sample, compare",
                    ["synthmed demo --quick --out demo_quick"])
    s.add_argument("--out", required=True, help="demo output folder")
    s.add_argument("--quick", action="store_true", help="toy size, under 2 minutes on 2 CPU cores")
    s.add_argument("--data", help="real data instead of the built-in phantom cohort (any `preprocess` input)")
    s.add_argument("--label-column", default=None, help="label column for --data (e.g. group)")
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help="override the demo's training config")
    s.add_argument("--device", default="auto", help=DEVICE_HELP)
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(func=_cmd_demo)

    s = add_command(sub, "reference", "reference runs: train a shipped reference config on public data, evaluate "
                                      "it against the held-out test split, tabulate the results",
                    ["synthmed reference run breastmnist-dcgan --work work"])
    refs = s.add_subparsers(dest="reference_command", required=True)
    r = add_command(refs, "list", "the shipped reference configs and the datasets they prepare", ["synthmed reference list"])
    r.add_argument("--data-root", default="../shared/data", help="the shared public data (default ../shared/data)")
    r = add_command(refs, "run", "prepare the data, train (or resume), evaluate; writes RUN/reference/result.json",
                    ["synthmed reference run breastmnist-dcgan --work work"])
    r.add_argument("name", help="reference config name (see `synthmed reference list`)")
    r.add_argument("--work", required=True, help="work folder: prepared/<dataset> and runs/<NAME>")
    r.add_argument("--data-root", default="../shared/data", help="the shared public data (default ../shared/data)")
    r.add_argument("--data", help="an already prepared dataset folder to use instead of preparing one")
    r.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key, e.g. train.iterations=100")
    r.add_argument("--n-sets", type=int, default=5, help="synthetic sets and floor subsets, each the test split's size")
    r.add_argument("--extractor-iterations", type=int, default=1000,
                   help="training iterations of the dataset's in-domain feature extractor (as synthmed evaluate)")
    r.add_argument("--seed", type=int, default=0, help="seed of the extractor and the floor subsets")
    r.add_argument("--batch-size", type=int, default=32, help="images per forward pass when sampling and extracting")
    r.add_argument("--device", default="auto", help=DEVICE_HELP)
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r = add_command(refs, "table", "Markdown table of the result.json files under work folders",
                    ["synthmed reference table work --out table.md"])
    r.add_argument("dirs", nargs="+", metavar="DIR", help="work folders of `synthmed reference run`")
    r.add_argument("--out", help="Markdown file to write (links relative to it); default: print the table")
    s.set_defaults(func=_cmd_reference)

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
    except OSError as e:  # a read-only, missing or full location: one line naming the path and the reason
        from synthmed.io_utils import describe_os_error

        logging.getLogger("synthmed").debug("OS error", exc_info=True)
        print(f"synthmed: error: {describe_os_error(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("synthmed: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
