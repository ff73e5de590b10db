"""The ``perla-jax`` command. ``train``: every ``Config`` field as an option (``perla_jax.cli``), plus the run's
options, handed to ``run_experiment``; ``eval``: a run folder's checkpointed policies (``evaluate_run``); ``plot``:
several runs' learning curves and final-performance table (``perla_jax.outputs.analysis``). experiments/run.py,
evaluate.py and plot.py are the same parsers under other names.

    perla-jax train --env mpe --algo perla_mappo --k 8 --seeds 4 --total-timesteps 2e6
    perla-jax train --resume runs/mpe-perla_mappo-k8-20261203-120000
    perla-jax eval runs/mpe-perla_mappo-k8-20261203-120000 --episodes 32 --render 2
    perla-jax plot runs/A runs/B --out compare.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from perla_jax.cli import HelpFormatter, add_config_options, config_from_args
from perla_jax.experiment import DIVERGED_EXIT, ON_DIVERGENCE, TARGET_CALLS, run_experiment
from perla_jax.outputs import analysis, marl_eval
from perla_jax.outputs.loggers import LOGGERS
from perla_jax.run_evaluation import evaluate_run
from perla_jax.sharding import maybe_initialize_distributed

RETURN_CONVENTIONS = ("team", "jaxmarl")
PLOT_DESCRIPTION = (
    "Overlay runs (label = algo and K from config.json, else the folder name): mean over seeds at each "
    "update with a 95% percentile-bootstrap band over seeds, x = environment steps. Then print, per run, "
    "the mean and IQM (25%-trimmed mean) of the final performance over seeds with 95% stratified-"
    "bootstrap CIs (rliable). Definition: " + analysis.FINAL_PERFORMANCE + "."
)


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


def build_eval_parser(prog: str = "perla-jax eval") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, formatter_class=HelpFormatter,
        description="Evaluate a run's checkpointed policies; writes eval.json (and a GIF with --render).")
    parser.add_argument("run_dir", type=Path, help="run folder written by a training run")
    parser.add_argument("--checkpoint", type=int, default=None, metavar="STEP",
                        help="update count of the checkpoint to evaluate (default: the latest)")
    parser.add_argument("--episodes", type=int, default=32, help="episodes per seed")
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("--greedy", dest="mode", action="store_const", const="greedy", help="argmax actions (default)")
    modes.add_argument("--stochastic", dest="mode", action="store_const", const="stochastic",
                       help="actions sampled from the policies")
    parser.set_defaults(mode="greedy")
    parser.add_argument("--render", type=int, default=0, metavar="N", help="write a GIF of N episodes of seed 0")
    parser.add_argument("--eval-seed", type=int, default=0, help="PRNG seed of the evaluation episodes")
    return parser


def eval_main(argv: list[str] | None = None, prog: str = "perla-jax eval") -> dict:
    """Evaluates as ``argv`` says; returns the dict written to eval.json. A refusal exits with status 2."""
    parser = build_eval_parser(prog)
    args = parser.parse_args(argv)
    try:
        return evaluate_run(args.run_dir, args.checkpoint, args.episodes, args.mode, args.render, args.eval_seed)
    except ValueError as e:
        parser.error(str(e))


def build_plot_parser(prog: str = "perla-jax plot") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=PLOT_DESCRIPTION.format(pct=100 * analysis.FINAL_FRACTION),
                                     formatter_class=HelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR", help="run folders written by training runs")
    parser.add_argument("--metric", default="return", choices=analysis.PLOTTABLE, help="metric to compare")
    parser.add_argument("--out", type=Path, default=Path("comparison.png"), metavar="FIG.png", help="figure file")
    parser.add_argument("--final-fraction", type=float, default=analysis.FINAL_FRACTION,
                        help="fraction of the last updates averaged into a seed's final performance")
    parser.add_argument("--return-convention", choices=RETURN_CONVENTIONS, default="team",
                        help="team: the sum over an episode of the mean reward over agents (ours, Mava's); jaxmarl: N "
                        "times that, as JaxMARL's MPELogWrapper logs it")
    parser.add_argument("--reps", type=int, default=2000, help="bootstrap resamples")
    parser.add_argument("--marl-eval", type=Path, default=None, metavar="FILE.json",
                        help="also write the runs in marl-eval's raw-data JSON (one run per seed)")
    parser.add_argument("--marl-eval-every", type=int, default=1, metavar="UPDATES",
                        help="updates between the logged steps of --marl-eval")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap RNG seed (the table is reproducible)")
    return parser


def plot_main(argv: list[str] | None = None, prog: str = "perla-jax plot") -> list[analysis.FinalRow]:
    """Plots and tabulates as ``argv`` says; returns the table's rows. A refusal exits with status 2."""
    parser = build_plot_parser(prog)
    args = parser.parse_args(argv)
    if args.reps < 1:
        parser.error(f"reps={args.reps} is invalid: allowed is an integer >= 1")
    try:
        runs = [analysis.load_run(path) for path in args.runs]
        if args.return_convention == "jaxmarl":
            runs = [analysis.in_jaxmarl_convention(run) for run in runs]
        rows = analysis.final_table(runs, args.metric, args.final_fraction, reps=args.reps, seed=args.seed)
        out = analysis.plot_runs(runs, args.out, args.metric, reps=args.reps, seed=args.seed)
        if args.marl_eval is not None:
            document = marl_eval.export_folders(runs, analysis.labels_for(runs), args.marl_eval_every)
            args.marl_eval.write_text(json.dumps(document, indent=1) + "\n")
    except (OSError, ValueError) as e:
        parser.error(str(e))
    print(f"Final {args.metric}: " + analysis.FINAL_PERFORMANCE.format(pct=100 * args.final_fraction)
          + "; 95% stratified-bootstrap CIs.")
    print(analysis.format_table(rows, args.metric))
    print(f"figure: {out}", file=sys.stderr)
    return rows


COMMANDS = {"train": train_main, "eval": eval_main, "plot": plot_main}


def main(argv: list[str] | None = None) -> int:
    """The ``perla-jax`` console script: ``perla-jax {train,eval,plot} [options]`` (``--help`` after a command
    lists its options); 0 when the command ended (the console script exits with it), SystemExit otherwise."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        given = repr(argv[0]) if argv else "nothing"
        print(f"usage: perla-jax {{{','.join(COMMANDS)}}} [options]\nperla-jax: error: command {given} is unknown: "
              f"allowed are {', '.join(COMMANDS)} (perla-jax train --help lists the options)", file=sys.stderr)
        raise SystemExit(2)
    maybe_initialize_distributed()  # a no-op unless launched as several processes (importing perla_jax joins it)
    COMMANDS[argv[0]](argv[1:])
    return 0
