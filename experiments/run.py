"""Train PERLA / MAPPO / IPPO from the command line and record the run: the ``perla-jax train`` command
(``perla_jax.command``) under the name the README and the studies use. Every ``perla_jax.Config`` field is an option
(``num_seeds`` is ``--seeds``); ``python experiments/run.py --help`` lists them. Example::

    python experiments/run.py --env mpe --algo perla_mappo --k 8 --seeds 4 --total-timesteps 2e6
    python experiments/run.py --env smax --map 2s3z --k 16 --seeds 8
    python experiments/run.py --resume runs/mpe-perla_mappo-k8-20261203-120000

What it writes and how a run resumes: ``perla_jax.experiment``.
"""

from __future__ import annotations

from pathlib import Path

from perla_jax.command import train_main
from perla_jax.sharding import maybe_initialize_distributed


def main(argv: list[str] | None = None) -> Path:
    return train_main(argv, prog="run.py")


if __name__ == "__main__":
    maybe_initialize_distributed()  # before any other JAX call; a no-op unless launched as several processes
    main()
