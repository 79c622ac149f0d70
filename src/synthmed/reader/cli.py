"""``synthmed reader create|serve|analyze``: argument parsing only (the library does the work).

Heavy imports (Flask, SciPy, the data loaders) happen inside the commands, so building the
``synthmed`` parser stays fast.
"""

from __future__ import annotations

import argparse
from typing import Any


def _cmd_create(args: argparse.Namespace) -> int:
    from synthmed.reader.study import create_study

    readers: Any = args.reader_names if args.reader_names else args.readers
    out = create_study(args.real, args.synthetic, args.out, n_real=args.n_real, n_synthetic=args.n_synthetic,
                       readers=readers, split=args.split, fold=args.fold, seed=args.seed,
                       window=(args.window[0], args.window[1]), device=args.device)
    n_readers = len(args.reader_names) if args.reader_names else args.readers
    print(f"reader study written to {out} ({n_readers} readers); start it with `synthmed reader serve {out}`")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from synthmed.reader.app import serve

    serve(args.study, host=args.host, port=args.port)
    return 0


def _cmd_analyze(args: argparse.Namespace) -> int:
    from synthmed.reader.analysis import write_analysis

    paths = write_analysis(args.study, args.out, min_seconds=args.min_seconds)
    print(f"reader study analysis written to {paths['report']} (and analysis.json, CSVs)")
    return 0


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add ``reader`` with its sub-commands to the ``synthmed`` sub-parsers ``sub``."""
    from synthmed.cli import add_command

    p = add_command(sub, "reader", "blinded real-versus-synthetic reader study: create, serve, analyze", [
        "synthmed reader create --real prepared/ds002748 --synthetic synthetic/alpha_sngan --out study",
        "synthmed reader serve study",
        "synthmed reader analyze study"])
    rsub = p.add_subparsers(dest="reader_command", required=True)

    s = add_command(rsub, "create", "draw real and synthetic images into a blinded study folder",
                    ["synthmed reader create --real prepared/ds002748 --synthetic synthetic/alpha_sngan --out study "
                     "--reader-names ana ben carl"])
    s.add_argument("--real", required=True, help="prepared dataset folder (`synthmed preprocess`)")
    s.add_argument("--synthetic", required=True, action="append",
                   help="folder written by `synthmed sample`, or a run folder; repeat to compare several models")
    s.add_argument("--out", required=True, help="study folder to create")
    s.add_argument("--n-real", type=int, default=50, help="real images (default 50)")
    s.add_argument("--n-synthetic", type=int, default=50, help="synthetic images per --synthetic (default 50)")
    s.add_argument("--readers", type=int, default=3, help="number of readers (default 3)")
    s.add_argument("--reader-names", nargs="+", metavar="NAME", help="reader names instead of reader-1 ...")
    s.add_argument("--split", default="test", choices=["test", "all", "trainval", "train", "val"],
                   help="subset of the prepared dataset to draw real images from (default test: the held-out "
                        "subjects, which no model was trained on)")
    s.add_argument("--fold", type=int, default=0, help="fold for --split train/val")
    s.add_argument("--seed", type=int, default=0, help="chooses which images enter the study (not the order)")
    s.add_argument("--window", type=float, nargs=2, default=[-1.0, 1.0], metavar=("LOW", "HIGH"),
                   help="intensity window shown black..white, the same for both sources (default -1 1)")
    s.add_argument("--device", default="auto", help="device for sampling a run folder")
    s.set_defaults(func=_cmd_create)

    s = add_command(rsub, "serve", "run the reader web app; prints each reader's link and the admin link",
                    ["synthmed reader serve study --host 0.0.0.0 --port 8765"])
    s.add_argument("study", help="study folder")
    s.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1; 0.0.0.0 for the network)")
    s.add_argument("--port", type=int, default=8765, help="TCP port (default 8765; 0 picks a free one)")
    s.set_defaults(func=_cmd_serve)

    s = add_command(rsub, "analyze", "accuracy, Table 2, tests against 50%%, kappa; report.html + analysis.json",
                    ["synthmed reader analyze study"])
    s.add_argument("study", help="study folder")
    s.add_argument("--out", help="output folder (default: the study folder)")
    s.add_argument("--min-seconds", type=float, default=1.0,
                   help="flag readers whose median server-side time per image is below this (default 1)")
    s.set_defaults(func=_cmd_analyze)
    return p
