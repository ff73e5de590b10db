"""The ``perla-jax`` command (``perla-jax train ...``; experiments/run.py is the same parser under another name):
every ``Config`` field as an option (``perla_jax.cli``), plus the run's options, handed to ``run_experiment``.

    perla-jax train --env mpe --algo perla_mappo --k 8 --seeds 4 --total-timesteps 2e6
    perla-jax train --env smax --map 2s3z --k 16 --seeds 8
    perla-jax train --resume runs/mpe-perla_mappo-k8-20261203-120000
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from perla_jax.cli import HelpFormatter, add_config_options, config_from_args
from perla_jax.experiment import DIVERGED_EXIT, ON_DIVERGENCE, TARGET_CALLS, run_experiment
from perla_jax.outputs.loggers import LOGGERS
from perla_jax.sharding import maybe_initialize_distributed

COMMANDS = ("train",)


def build_train_parser(config_defaults: bool = True, prog: str = "perla-jax train") -> argparse.ArgumentParser:
    """One option per Config field (defaults from the dataclass), plus the run options. With
    ``config_defaults=False`` the Config options default to None, so only options given on the command line
    come back set (``--resume`` compares those with the stored config)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Train PERLA/MAPPO/IPPO on a cooperative multi-agent task (MPE, SMAX, MABrax, the credit game) "
        "and record the run.",
        formatter_class=HelpFormatter,
    )
    add_config_options(parser, config_defaults)
    run = parser.add_argument_group("run")
    run.add_argument("--out", type=Path, default=None, help="run folder (default: runs/<env>-<algo>[-k<K>]-<time>)")
    run.add_argument(
        "--chunk-size",
        type=int,
        default=None,
        metavar="UPDATES",
        help=f"updates per compiled call, a divisor of num_updates (default: the largest divisor <= "
        f"num_updates//{TARGET_CALLS}, i.e. about {TARGET_CALLS} calls); a checkpoint is saved after each",
    )
    run.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR",
                     help="continue the run in RUN_DIR from its latest checkpoint, with its config.json")
    run.add_argument("--stop-after", type=int, default=None, metavar="UPDATES",
                     help="stop (resumably) at the first checkpoint with at least UPDATES updates done")
    run.add_argument("--log", default="", metavar="KINDS",
                     help=f"extra loggers, comma-separated: {', '.join(LOGGERS)} (metrics.csv is always written)")
    run.add_argument("--keep-checkpoints", type=int, default=2, metavar="N", help="newest checkpoints kept")
    run.add_argument("--keep-every", type=int, default=None, metavar="UPDATES",
                     help="also keep every checkpoint whose update count is a multiple of UPDATES")
    run.add_argument("--on-divergence", choices=ON_DIVERGENCE, default="stop",
                     help="a seed whose parameters or losses become non-finite: stop the run (exit status "
                     f"{DIVERGED_EXIT}, its newest checkpoint finite), or freeze that seed and go on with the others")
    return parser


def train_main(argv: list[str] | None = None, prog: str = "perla-jax train") -> Path:
    """Parses ``argv`` (default ``sys.argv[1:]``), trains (or resumes) and records; returns the run folder. A refused
    value exits with status 2 and the message, before anything compiles."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_train_parser(prog=prog)
    args = parser.parse_args(argv)
    given = vars(build_train_parser(config_defaults=False, prog=prog).parse_args(argv))
    options = dict(out=args.out, chunk_size=args.chunk_size, stop_after=args.stop_after, log=args.log,
                   keep_checkpoints=args.keep_checkpoints, keep_every=args.keep_every,
                   on_divergence=args.on_divergence)
    try:
        if args.resume is not None:
            if args.preset is not None:
                raise ValueError(f"--preset={args.preset} cannot be combined with --resume: the run's config.json "
                                 "holds the values its preset set")
            return run_experiment(resume=args.resume, given=given, **options)
        return run_experiment(config_from_args(args, given), **options)
    except ValueError as e:
        parser.error(str(e))


def main(argv: list[str] | None = None) -> int:
    """The ``perla-jax`` console script: ``perla-jax train [options]`` (``perla-jax train --help``); 0 when the run
    ended (the console script exits with it), SystemExit otherwise."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        given = repr(argv[0]) if argv else "nothing"
        print(f"usage: perla-jax {{{','.join(COMMANDS)}}} [options]\nperla-jax: error: command {given} is unknown: "
              f"allowed are {', '.join(COMMANDS)} (perla-jax train --help lists the options)", file=sys.stderr)
        raise SystemExit(2)
    maybe_initialize_distributed()  # a no-op unless launched as several processes (importing perla_jax joins it)
    train_main(argv[1:])
    return 0
