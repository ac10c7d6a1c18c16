"""The ``tradi`` console script: run the paper's experiments and get a report worth reading."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from tradi import __version__
from tradi.experiments.console import configure_logging, console_logging

# Only the standard library and the lazy `tradi` package are imported here: `tradi --help` and
# `tradi --version`, `tradi list`, `tradi show` and the checks of `tradi run`'s arguments answer
# without loading torch (issue 21). The rest is imported by the commands that train.
if TYPE_CHECKING:
    from tradi.data import Benchmark
    from tradi.experiments import ExperimentConfig

DESCRIPTION = """\
TRADI (Franchi et al., ECCV 2020) and its baselines: train every method of an experiment, then
measure calibration and out-of-distribution detection.

  tradi list                         the shipped experiment configs
  tradi show mnist-notmnist          print a config (copy it to a file, edit, run the file)
  tradi run digits                   every method on the embedded digits (about a minute)
  tradi run digits train.epochs=2 methods.tradi.n_samples=10   override config keys (KEY=VALUE)
  tradi run my.yaml --methods mcp tradi --seeds 3 --out runs/mine
  tradi run mnist-notmnist --out runs/mnist-notmnist --resume   continue an interrupted run
  tradi run digits --nproc 2         data-parallel (DDP) on 2 local processes; or with torchrun:
      torchrun --nproc_per_node 2 -m tradi.cli run digits
  tradi reproduce mnist-notmnist     the paper's settings, written to runs/mnist-notmnist

A run writes OUT/results.json (every metric, train and test time, forward passes, per method and
seed, with the config, seeds and versions), OUT/results.csv, OUT/report.md (the paper's table,
ours as mean +- std over seeds beside the paper's numbers, with figures) and OUT/figures/.
Datasets other than digits are read from --data-dir or $TRADI_DATA_DIR (--download fetches
missing files from their official sources and checks them against the known checksums).
Progress bars are shown only when stderr is a terminal; otherwise log lines replace them.
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tradi", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"tradi {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run(commands)
    _add_reproduce(commands)
    commands.add_parser("list", help="list the shipped configs")
    show = commands.add_parser("show", help="print a shipped config's YAML, to copy and edit")
    show.add_argument("name", metavar="NAME")
    return parser


def _add_run(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = commands.add_parser(
        "run",
        help="train and evaluate every method of a config, write results and report",
        description="Train every method of CONFIG once per seed, evaluate it, and write "
        "results.json, results.csv, report.md and figures/ to --out. KEY=VALUE arguments "
        "override the config's keys, checked like the YAML: train.epochs=2, "
        "methods.tradi.n_samples=10, seeds=[0,1,2], model.options.hidden_features=[64,64].",
    )
    run.add_argument(
        "config", metavar="CONFIG_OR_NAME", help="a shipped config name or a YAML file"
    )
    run.add_argument(
        "overrides",
        nargs="*",
        default=[],  # with a default argparse does not list KEY=VALUE as required
        metavar="KEY=VALUE",
        help="set a config key (dotted path; the value is read as YAML); any position",
    )
    run.add_argument(
        "--methods", nargs="+", metavar="METHOD", help="only these methods of the config"
    )
    run.add_argument(
        "--seeds", type=int, metavar="N", help="run seeds 0..N-1 instead of the config's seeds"
    )
    run.add_argument("--out", type=Path, help="output folder (default: runs/<config name>)")
    _common(run)


def _add_reproduce(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    reproduce = commands.add_parser(
        "reproduce",
        help="run a shipped config with the paper's settings into runs/NAME",
        description="Short form of `tradi run NAME --out runs/NAME`: the shipped config as is "
        "(the paper's recipe and seeds).",
    )
    reproduce.add_argument("name", metavar="NAME", help="a shipped config name (see `tradi list`)")
    reproduce.add_argument("--out", type=Path, help="output folder (default: runs/NAME)")
    _common(reproduce)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, help="dataset folder (default: $TRADI_DATA_DIR)")
    parser.add_argument(
        "--download",
        action="store_true",
        help="fetch missing dataset files from their official sources into the data folder "
        "(each checked against its known checksum)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out: finished method/seed pairs are kept, the one in "
        "progress restarts from its last epoch checkpoint (without it, a folder holding another "
        "run is refused: --overwrite replaces it)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the results of a finished run in --out (without it, a folder holding "
        "another run's results is refused)",
    )
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bars, log lines instead (automatic when stderr is not a terminal); "
        "per-epoch lines only when stdout is a terminal, else one line per training",
    )
    parser.add_argument(
        "--nproc",
        type=int,
        default=1,
        metavar="N",
        help="train with N local processes under DistributedDataParallel (gloo on CPU, NCCL on "
        "GPU): the single-process global batches split across them, metrics on the whole test "
        "set, files written once (default 1; under torchrun, use its --nproc_per_node instead)",
    )


def _warn_on_rank_zero_only() -> None:
    """Every rank of a run executes the same code on the same kind of data, so each warning
    would print once per rank: ranks other than 0 drop warnings (errors still fail the run and
    name their rank)."""
    from tradi.distributed import is_rank_zero

    if not is_rank_zero():
        warnings.filterwarnings("ignore")


def _show_progress(no_progress: bool) -> bool:
    """Bars only for a person watching: never into a log file or a pipe (cursor codes)."""
    return not no_progress and sys.stderr.isatty()


def _epoch_lines() -> bool:
    """Epoch lines only where a person watches (stdout is a terminal), else one per training."""
    return sys.stdout.isatty()


def run_rank(
    config: ExperimentConfig,
    out: Path,
    resume: bool,
    data_dir: Path | None,
    progress: bool,
    command: str,
    overwrite: bool = False,
) -> None:
    """What each process of `--nproc N` runs (module-level: `launch` spawns and pickles it)."""
    from tradi.experiments import run_experiment

    configure_logging(progress, _epoch_lines())
    _warn_on_rank_zero_only()
    run_experiment(
        config,
        out,
        resume=resume,
        data_dir=data_dir,
        progress=progress,
        command=command,
        overwrite=overwrite,
    )


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv``; KEY=VALUE overrides may stand anywhere after ``run CONFIG``."""
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    unknown = [a for a in extra if a.startswith("-") or "=" not in a]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if extra and args.command != "run":
        parser.error(f"KEY=VALUE overrides are for `tradi run`, got: {' '.join(extra)}")
    if args.command == "run":  # `--methods a b k=v` swallows k=v: no method name has a "="
        swallowed = [m for m in args.methods or () if "=" in m]
        args.methods = [m for m in args.methods or () if "=" not in m] or None
        args.overrides = [*args.overrides, *swallowed, *extra]
    return args


def _check(args: argparse.Namespace) -> None:
    """Everything about `run`/`reproduce`'s arguments that can be checked without torch: the
    numbers, the config's name or file, its YAML and the overrides' syntax (a mistyped name is
    refused at once, issue 21). Raises `ConfigError` saying what to change."""
    from tradi.experiments.catalog import config_names, read_raw_config
    from tradi.experiments.errors import ConfigError

    if args.nproc < 1:
        raise ConfigError(f"--nproc must be >= 1, got {args.nproc}")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and args.nproc > 1:
        raise ConfigError("under torchrun the processes come from --nproc_per_node: drop --nproc")
    if args.command == "run" and args.seeds is not None and args.seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {args.seeds}")
    if args.command == "reproduce" and args.name not in config_names():
        raise ConfigError(f"unknown config {args.name!r}; shipped: {', '.join(config_names())}")
    read_raw_config(_source(args), getattr(args, "overrides", ()))


def _source(args: argparse.Namespace) -> str:
    return str(args.config if args.command == "run" else args.name)


def _load(args: argparse.Namespace) -> tuple[ExperimentConfig, Path]:
    """The config to run, with the command line's changes, and the output folder."""
    from tradi.experiments import load_config, select_methods

    config = load_config(_source(args), getattr(args, "overrides", ()))
    out = args.out or Path("runs") / config.name
    if args.command == "run":
        config = select_methods(config, args.methods)
        if args.seeds is not None:
            config = replace(config, seeds=tuple(range(args.seeds)))
    return config, out


def _fetch(config: ExperimentConfig, data_dir: Path | None) -> Benchmark:
    """The benchmark, with missing files downloaded (``--download``) before any training."""
    from tradi.data import load_benchmark

    return load_benchmark(
        config.benchmark,
        data_dir,
        val_fraction=config.data.val_fraction,
        seed=config.data.split_seed,
        download=True,
    )


def _run(args: argparse.Namespace, command: str) -> int:
    """`run` and `reproduce`: check the arguments, then (importing torch) train and report.
    A corrupt data file is exit status 2 and a failed distributed worker 1, in one line; their
    classes are imported here, after the torch-free checks."""
    _check(args)
    from tradi.data import ChecksumMismatchError
    from tradi.distributed import DistributedRunError

    try:
        return _train(args, command)
    except ChecksumMismatchError as error:
        return _failed(error, 2)
    except DistributedRunError as error:
        return _failed(error, 1)


def _train(args: argparse.Namespace, command: str) -> int:
    """Train, evaluate, write results and report, and print the compact table (rank 0)."""
    from tradi.distributed import init_from_env, is_rank_zero, launch, shutdown
    from tradi.experiments import check_device, run_experiment

    config, out = _load(args)
    check_device(config.device)
    progress = _show_progress(args.no_progress)
    benchmark = _fetch(config, args.data_dir) if args.download else None
    if args.nproc > 1:
        settings = (config, out, args.resume, args.data_dir, progress, command, args.overwrite)
        launch(run_rank, args.nproc, settings)
        results = json.loads((out / "results.json").read_text())
    else:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # torchrun started this process
            init_from_env()
            _warn_on_rank_zero_only()
        results = run_experiment(
            config,
            out,
            resume=args.resume,
            data_dir=args.data_dir,
            progress=progress,
            command=command,
            benchmark=benchmark,
            overwrite=args.overwrite,
        )
    if is_rank_zero():
        from tradi.experiments.report import recipe_warning
        from tradi.experiments.summary import closing_text

        print(closing_text(results, out, recipe_warning(results)))
    shutdown()  # under torchrun: leave the process group before the interpreter exits
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status.

    Expected failures (a bad config or argument, a missing or corrupt data file, an unavailable
    device, a file that cannot be written) print one ``tradi: error: ...`` line saying what to
    do and return 2; a failed distributed worker returns 1, a closed stdout 141, and Ctrl-C at
    any moment (imports included) one line and 130. `list`, `show` and the checks of `run`'s
    arguments import no torch (issue 21).
    """
    arguments = list(argv if argv is not None else sys.argv[1:])
    try:
        try:
            return _main(arguments)
        finally:
            sys.stdout.flush()  # a closed pipe shows here, not as a traceback at exit
    except BrokenPipeError:
        return _closed_pipe()
    except KeyboardInterrupt:
        print(_interrupted(arguments), file=sys.stderr)
        return 130


def _main(arguments: list[str]) -> int:
    args = _parse(arguments)
    from tradi.experiments.errors import ConfigError

    progress = _show_progress(getattr(args, "no_progress", True))
    with console_logging(progress, _epoch_lines()):
        return _dispatch(args, arguments, ConfigError)


def _dispatch(args: argparse.Namespace, arguments: list[str], config_error: type) -> int:
    try:
        if args.command in ("list", "show"):
            from tradi.experiments.catalog import config_listing, config_text

            print(config_listing() if args.command == "list" else config_text(args.name)[0], end="")
            return 0
        return _run(args, _command(arguments))
    except BrokenPipeError:
        raise
    except (config_error, OSError) as error:  # OSError: a missing dataset file, an unwritable out
        return _failed(error, 2)


def _command(arguments: list[str]) -> str:
    """The command that reruns this experiment from scratch (recorded in results and report)."""
    return shlex.join(["tradi", *(a for a in arguments if a not in ("--resume", "--overwrite"))])


def _failed(error: Exception, status: int) -> int:
    print(f"tradi: error: {error}", file=sys.stderr)
    return status


def _interrupted(arguments: list[str]) -> str:
    """The line for Ctrl-C: how to continue a run (`--resume` keeps every finished training;
    harmless when none had started), else just that it stopped."""
    if arguments[:1] in (["run"], ["reproduce"]):
        return f"\ntradi: interrupted; continue with: {_command(arguments)} --resume"
    return "\ntradi: interrupted"


def _closed_pipe() -> int:
    """The reader of stdout went away (`tradi list | head -1`): stop quietly. Python would
    report the failed flush at exit, so stdout is pointed at /dev/null first."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 141  # 128 + SIGPIPE, what a shell reports for a command stopped by a closed pipe


if __name__ == "__main__":
    sys.exit(main())
