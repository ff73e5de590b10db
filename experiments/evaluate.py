"""Evaluate the policies of a run folder, and optionally draw them: ``perla-jax eval`` under another name.

Loads the latest (or ``--checkpoint STEP``) checkpoint, plays ``--episodes`` episodes per seed with greedy
(argmax) or stochastic actions, prints the mean team return (and on SMAX the win rate) with a 95% CI over seeds and
writes ``eval.json`` to the run folder (``perla_jax.run_evaluation``). ``--render N`` also writes a GIF of N
episodes of seed 0. Example::

    python experiments/evaluate.py runs/mpe-perla_mappo-k16-20260101-120000 --episodes 32 --render 2
"""

from __future__ import annotations

from perla_jax.command import eval_main


def main(argv: list[str] | None = None) -> dict:
    return eval_main(argv, prog="evaluate.py")


if __name__ == "__main__":
    main()
