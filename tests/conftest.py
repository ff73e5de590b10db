import os
import sys
from pathlib import Path

# `from experiments import suite`: the entry points and studies are a package beside perla_jax, not installed
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Tests run on CPU; keep XLA from grabbing every core's worth of threads for tiny programs.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Compilation dominates this suite (tiny programs, many configurations); XLA's cheap compile mode more than
# halves it (test_train.py: user CPU 5m35s -> 1m55s, measured 2026-11-25). Every comparison in the tests is
# between runs compiled the same way, and the CLI, benchmarks and notebooks outside tests compile normally.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
# A per-process persistent compilation cache: the CLI, checkpoint, sharding and notebook tests start subprocesses
# that compile the same tiny programs as tests before them; they inherit these variables and reuse the executables.
# Each pytest process (the controller and every xdist worker) makes its own folder; one set by the user is kept.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ or os.environ.get("PERLA_JAX_TEST_CACHE") == "1":
    import atexit
    import shutil
    import tempfile

    os.environ["PERLA_JAX_TEST_CACHE"] = "1"
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="perla_jax_test_cache_")
    # the children that share it have exited with their tests; the folder would otherwise outlive every session
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
