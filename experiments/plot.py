"""Overlay the learning curves of finished runs and print their final-performance table.

    python experiments/plot.py runs/A runs/B --metric return --out compare.png

See ``perla_jax.outputs.analysis`` for the definitions (also printed by ``--help``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from perla_jax import analysis
from perla_jax.outputs import marl_eval

DESCRIPTION = (
    "Overlay runs (label = algo and K from config.json, else the folder name): mean over seeds at each "
    "update with a 95% percentile-bootstrap band over seeds, x = environment steps. Then print, per run, "
    "the mean and IQM (25%-trimmed mean) of the final performance over seeds with 95% stratified-"
    "bootstrap CIs (rliable). Definition: " + analysis.FINAL_PERFORMANCE + "."
)


RETURN_CONVENTIONS = ("team", "jaxmarl")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plot.py", description=DESCRIPTION.format(pct=100 * analysis.FINAL_FRACTION),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR", help="run folders written by run.py")
    parser.add_argument("--metric", default="return", choices=analysis.PLOTTABLE, help="metric to compare")
    parser.add_argument("--out", type=Path, default=Path("comparison.png"), metavar="FIG.png", help="figure file")
    parser.add_argument(
        "--final-fraction", type=float, default=analysis.FINAL_FRACTION,
        help="fraction of the last updates averaged into a seed's final performance",
    )
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


def main(argv: list[str] | None = None) -> list[analysis.FinalRow]:
    parser = build_parser()
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
    pct = 100 * args.final_fraction
    print(f"Final {args.metric}: " + analysis.FINAL_PERFORMANCE.format(pct=pct) + "; 95% stratified-bootstrap CIs.")
    print(analysis.format_table(rows, args.metric))
    print(f"figure: {out}", file=sys.stderr)
    return rows


if __name__ == "__main__":
    main()
