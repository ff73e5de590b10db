"""experiments/jaxmarl_baseline.py without JaxMARL's file: the interleaved timing and its table, the configs it
times, and the refusal of a folder that is not JaxMARL's baselines/IPPO."""

from __future__ import annotations

import time

import numpy as np
import pytest

from experiments import jaxmarl_baseline as jb


def test_rows_time_against_jaxmarl_round_by_round():
    def program(seconds):
        def run(keys):
            time.sleep(seconds)
            return np.zeros(1)
        return run, None

    fns = {jb.JAXMARL: program(0.02), "ippo": program(0.01)}
    rows = jb.time_rows(fns, rounds=3, steps=1000)
    assert [r["name"] for r in rows] == [jb.JAXMARL, "ippo"]
    assert rows[0]["ratios"] == [1.0, 1.0, 1.0] and all(r > 1.2 for r in rows[1]["ratios"])  # half the time
    table = jb.format_table({8: rows}).splitlines()
    assert table[2].startswith(f"| {jb.JAXMARL} | 8 |") and "| 1.00x | 1.00-1.00 |" in table[2]
    assert len(table) == 4


def test_our_rows_take_jaxmarls_settings():
    ippo = jb.our_config("ippo", steps=16 * 128 * 20, seeds=8)
    assert (ippo.algo, ippo.num_envs, ippo.num_steps, ippo.update_epochs, ippo.num_minibatches) == ("ippo", 16, 128, 4, 4)
    assert ippo.time_limit == "terminal" and not ippo.actor_agent_id and ippo.num_updates == 20
    assert (ippo.actor_lr, ippo.clip_eps, ippo.ent_coef, ippo.max_grad_norm) == (2.5e-4, 0.2, 0.01, 0.5)
    assert jb.our_config("ippo, pg spread every 10", 16 * 128 * 20, 1).pg_spread_every == 10
    ours = jb.our_config(jb.OUR_DEFAULTS, 16 * 128 * 20, 1)
    assert ours.algo == "mappo" and ours.num_envs == 16 and ours.time_limit != "terminal"


def test_a_folder_without_jaxmarls_script_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        jb.main(["--jaxmarl-dir", str(tmp_path)])
    assert "holds no ippo_ff_mpe.py: allowed is JaxMARL's baselines/IPPO" in capsys.readouterr().err
