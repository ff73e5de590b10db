"""Overlay the learning curves of finished runs and print their final-performance table: ``perla-jax plot``
under another name.

    python experiments/plot.py runs/A runs/B --metric return --out compare.png

See ``perla_jax.outputs.analysis`` for the definitions (also printed by ``--help``).
"""

from __future__ import annotations

from perla_jax.command import plot_main


def main(argv: list[str] | None = None):
    return plot_main(argv, prog="plot.py")


if __name__ == "__main__":
    main()
