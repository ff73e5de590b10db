import os

# Tests run on CPU; keep XLA from grabbing every core's worth of threads for tiny programs.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Compilation dominates this suite (tiny programs, many configurations); XLA's cheap compile mode more than
# halves it (test_train.py: user CPU 5m35s -> 1m55s, measured 2026-11-25). Every comparison in the tests is
# between runs compiled the same way, and the CLI, benchmarks and notebooks outside tests compile normally.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
