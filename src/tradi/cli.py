"""The ``tradi`` console script: run the paper's experiments and get a report worth reading."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from tradi.data import DATA_DIR_ENV, DatasetNotFoundError

if TYPE_CHECKING:
    from tradi.experiments import ExperimentConfig

DESCRIPTION = """\
TRADI (Franchi et al., ECCV 2020) and its baselines: train every method of an experiment, then
measure calibration and out-of-distribution detection.

  tradi list                         the shipped experiment configs
  tradi show mnist-notmnist          print a config (copy it to a file, edit, run the file)
  tradi run digits                   all six methods on the embedded digits (about a minute)
  tradi run my.yaml --methods mcp tradi --seeds 3 --out runs/mine
  tradi run mnist-notmnist --out runs/mnist-notmnist --resume   continue an interrupted run
  tradi run digits --nproc 2         data-parallel (DDP) on 2 local processes; or with torchrun:
      torchrun --nproc_per_node 2 -m tradi.cli run digits
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
    parser.add_argument(
        "--nproc",
        type=int,
        default=1,
        metavar="N",
        help="train with N local processes under DistributedDataParallel (gloo on CPU, NCCL on "
        "GPU): the single-process global batches split across them, metrics on the whole test "
        "set, files written once (default 1; under torchrun, use its --nproc_per_node instead)",
    )


def _configure_logging(no_progress: bool) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    if no_progress:  # log lines replace the progress bars
        logging.getLogger("tradi").setLevel(logging.INFO)


def run_rank(
    config: ExperimentConfig,
    out: Path,
    resume: bool,
    data_dir: Path | None,
    no_progress: bool,
    command: str,
) -> None:
    """What each process of `--nproc N` runs (module-level: `launch` spawns and pickles it)."""
    from tradi.experiments import run_experiment

    _configure_logging(no_progress)
    run_experiment(
        config, out, resume=resume, data_dir=data_dir, progress=not no_progress, command=command
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    args = _parser().parse_args(argv)
    # The command that reruns this experiment from scratch (recorded in results and report).
    arguments = argv if argv is not None else sys.argv[1:]
    command = shlex.join(["tradi", *(a for a in arguments if a != "--resume")])
    # Imported here so that `tradi --help` answers without loading torch.
    from tradi.distributed import DistributedRunError, init_from_env, is_rank_zero, launch
    from tradi.experiments import (
        ConfigError,
        config_names,
        config_text,
        load_config,
        main_table,
        run_experiment,
        select_methods,
    )

    _configure_logging(getattr(args, "no_progress", False))
    under_torchrun = int(os.environ.get("WORLD_SIZE", "1")) > 1
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
        if args.nproc < 1:
            raise ConfigError(f"--nproc must be >= 1, got {args.nproc}")
        if under_torchrun and args.nproc > 1:
            raise ConfigError(
                "under torchrun the processes come from --nproc_per_node: drop --nproc"
            )
        if args.nproc > 1:
            launch(
                run_rank,
                args.nproc,
                (config, out, args.resume, args.data_dir, args.no_progress, command),
            )
            results = json.loads((out / "results.json").read_text())
        else:
            if under_torchrun:  # torchrun started this process: join its group first
                init_from_env()
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
    except DistributedRunError as error:
        print(f"tradi: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\ntradi: interrupted; continue with: {command} --resume", file=sys.stderr)
        return 130
    if not is_rank_zero():
        return 0
    print(main_table(results))
    print(f"\nreport: {out / 'report.md'}  results: {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
