"""The ``tradi`` console script: run the paper's experiments and get a report worth reading."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from tradi.data import DATA_DIR_ENV, DatasetNotFoundError

DESCRIPTION = """\
TRADI (Franchi et al., ECCV 2020) and its baselines: train every method of an experiment, then
measure calibration and out-of-distribution detection.

  tradi list                         the shipped experiment configs
  tradi show mnist-notmnist          print a config (copy it to a file, edit, run the file)
  tradi run digits                   all six methods on the embedded digits (about a minute)
  tradi run my.yaml --methods mcp tradi --seeds 3 --out runs/mine
  tradi run mnist-notmnist --out runs/mnist-notmnist --resume   continue an interrupted run
  tradi reproduce mnist-notmnist     the paper's settings, written to runs/mnist-notmnist

A run writes OUT/results.json (every metric, train and test time, forward passes, per method and
seed, with the config, seeds and versions), OUT/results.csv, OUT/report.md (the paper's table,
ours as mean +- std over seeds beside the paper's numbers, with figures) and OUT/figures/.
Datasets other than digits are read from --data-dir or $TRADI_DATA_DIR.
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tradi", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="train and evaluate every method of a config, write results and report",
        description="Train every method of CONFIG once per seed, evaluate it, and write "
        "results.json, results.csv, report.md and figures/ to --out.",
    )
    run.add_argument(
        "config", metavar="CONFIG_OR_NAME", help="a shipped config name or a YAML file"
    )
    run.add_argument(
        "--methods", nargs="+", metavar="METHOD", help="only these methods of the config"
    )
    run.add_argument(
        "--seeds", type=int, metavar="N", help="run seeds 0..N-1 instead of the config's seeds"
    )
    run.add_argument("--out", type=Path, help="output folder (default: runs/<config name>)")
    _common(run)

    reproduce = commands.add_parser(
        "reproduce",
        help="run a shipped config with the paper's settings into runs/NAME",
        description="Short form of `tradi run NAME --out runs/NAME`: the shipped config as is "
        "(the paper's recipe and seeds).",
    )
    reproduce.add_argument("name", metavar="NAME", help="a shipped config name (see `tradi list`)")
    reproduce.add_argument("--out", type=Path, help="output folder (default: runs/NAME)")
    _common(reproduce)

    commands.add_parser("list", help="list the shipped configs")
    show = commands.add_parser("show", help="print a shipped config's YAML, to copy and edit")
    show.add_argument("name", metavar="NAME")
    return parser


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        help=f"dataset folder (default: ${DATA_DIR_ENV}, then ../shared/data)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out: finished method/seed pairs are kept, the one in "
        "progress restarts from its last epoch checkpoint (without it, a previous run's state in "
        "--out is discarded)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    args = _parser().parse_args(argv)
    # The command that reruns this experiment from scratch (recorded in results and report).
    arguments = argv if argv is not None else sys.argv[1:]
    command = shlex.join(["tradi", *(a for a in arguments if a != "--resume")])
    # Imported here so that `tradi --help` answers without loading torch.
    from tradi.experiments import (
        ConfigError,
        config_names,
        config_text,
        load_config,
        main_table,
        run_experiment,
        select_methods,
    )

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    if getattr(args, "no_progress", False):  # log lines replace the progress bars
        logging.getLogger("tradi").setLevel(logging.INFO)
    try:
        if args.command == "list":
            for name in config_names():
                print(f"{name:16s} {load_config(name).description}")
            return 0
        if args.command == "show":
            print(config_text(args.name)[0], end="")
            return 0
        source = args.config if args.command == "run" else args.name
        if args.command == "reproduce" and source not in config_names():
            raise ConfigError(f"unknown config {source!r}; shipped: {', '.join(config_names())}")
        config = load_config(source)
        out = args.out or Path("runs") / config.name
        if args.command == "run":
            config = select_methods(config, args.methods)
            if args.seeds is not None:
                if args.seeds < 1:
                    raise ConfigError(f"--seeds must be >= 1, got {args.seeds}")
                config = replace(config, seeds=tuple(range(args.seeds)))
        results = run_experiment(
            config,
            out,
            resume=args.resume,
            data_dir=args.data_dir,
            progress=not args.no_progress,
            command=command,
        )
    except (ConfigError, DatasetNotFoundError) as error:
        print(f"tradi: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ntradi: interrupted; continue with: {command} --resume", file=sys.stderr)
        return 130
    print(main_table(results))
    print(f"\nreport: {out / 'report.md'}  results: {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
