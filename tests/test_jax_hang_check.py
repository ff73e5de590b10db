"""experiments/jax_hang_check.py, the reproduction of the jax 0.10 XLA:CPU hang behind pyproject's jax<0.10 pin,
completes on the pinned jax (on a jax that hangs, it reports HUNG and exits 1; see docs/jax-pin.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_hang_check_completes_on_the_pinned_jax():
    result = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "jax_hang_check.py"), "--seeds", "2", "--updates", "1",
         "--timeout", "300"],
        capture_output=True, text=True, timeout=400, cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    assert "seeds=2" in result.stdout and "completed in" in result.stdout
