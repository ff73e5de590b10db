import os

# Tests run on CPU; keep XLA from grabbing every core's worth of threads for tiny programs.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
