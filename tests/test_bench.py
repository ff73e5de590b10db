"""Smoke test of experiments/bench.py: one tiny in-process measurement and the markdown helpers."""

from __future__ import annotations

import importlib
import math

import pytest

TINY = dict(num_envs=2, num_steps=8, num_minibatches=2, update_epochs=1)
# Unoptimised XLA compiles several times faster; the test checks the plumbing, not the speed.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


@pytest.fixture(scope="module")
def bench():
    return importlib.import_module("experiments.bench")


def _parse_rows(table: str) -> list[dict[str, str]]:
    lines = [ln for ln in table.splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert set(lines[1].replace("|", "")) <= set("-: ")
    return [dict(zip(header, (c.strip() for c in ln.strip("|").split("|")), strict=True)) for ln in lines[2:]]


@pytest.mark.timeout(120)
def test_quick_measure_table_parses(bench):
    # One combo only, to stay well under 40 s on 2 cores; a non-perla row is faked for the K column.
    base = dict(TINY, critic_action_layer="last")
    row = bench.measure("perla_mappo", k=2, seeds=1, updates=1, repeats=2, base=base, options=FAST_COMPILE)
    parsed = _parse_rows(bench.format_table([row, dict(row, algo=bench.RANDOM, K=None, layer=None)]))
    assert [r["algo"] for r in parsed] == ["perla_mappo", bench.RANDOM]
    assert parsed[0]["K"] == "2" and parsed[1]["K"] == "-"
    assert parsed[0]["critic action layer"] == "last" and parsed[1]["critic action layer"] == "-"
    for r in parsed:
        assert set(r) == set(bench.COLUMNS)
        low, high = (float(x.replace(",", "")) for x in r["min-max steps/s"].split("-"))
        for text in (r["steps/s (median)"], r["compile s"], r["peak MiB"]):
            value = float(text.replace(",", ""))
            assert math.isfinite(value) and value >= 0
        assert 0 < low <= float(r["steps/s (median)"].replace(",", "")) <= high
        assert float(r["peak MiB"]) > 0


def test_ratio_checks(bench):
    row = dict(updates=1, min=1.0, max=1.0, compile_s=1.0, peak_mib=1.0, seeds=1)
    rows = [
        dict(row, algo="mappo", K=None, layer=None, median=100.0),
        dict(row, algo="perla_mappo", K=16, layer="first", median=50.0),
        dict(row, algo="perla_mappo", K=16, layer="last", median=70.0),
    ]
    lines = bench.ratio_checks(rows, jaxmarl_baseline=50.0)
    assert "(first-layer actions) / mappo at 1 seed(s): 0.50 (target >= 0.6: NOT met)" in lines[0]
    assert "(last-layer actions) / mappo at 1 seed(s): 0.70 (target >= 0.6: met)" in lines[1]
    assert "2.00 (target >= 1.0: met" in lines[2]


def test_replace_section_keeps_outside_text(bench):
    text = f"# Title\nbefore\n{bench.START}\nold table\n{bench.END}\nafter\n"
    out = bench.replace_section(text, "new table")
    assert out == f"# Title\nbefore\n{bench.START}\nnew table\n{bench.END}\nafter\n"
    assert bench.replace_section(out, "new table") == out  # idempotent


def test_replace_section_appends_markers_when_absent(bench, tmp_path):
    assert bench.replace_section("# Notes\nkeep me\n", "t") == f"# Notes\nkeep me\n\n{bench.START}\nt\n{bench.END}\n"
    target = tmp_path / "BENCHMARKS.md"
    bench.write_report(str(target), "table one")
    bench.write_report(str(target), "table two")
    text = target.read_text()
    assert text.startswith("# Benchmarks\n") and "table two" in text and "table one" not in text
    assert text.count(bench.START) == 1 and text.count(bench.END) == 1


def test_interleaved_rates_and_ratios(bench):
    """Two tiny configs timed alternately: positive rates, the reference's ratio to itself is exactly 1."""
    specs = [
        dict(algo="mappo", k=1, seeds=1, updates=1, base=TINY),
        dict(algo="perla_mappo", k=2, seeds=1, updates=1, base=dict(TINY, critic_action_layer="last",
                                                                      critic_target="joint", critic_arch="mlp")),
        dict(algo="perla_mappo", k=2, seeds=1, updates=1, base=dict(TINY, critic_target="joint")),
    ]
    rows = bench.interleaved(specs, rounds=2, options=FAST_COMPILE)
    assert rows[0]["ratio"] == rows[0]["ratio_min"] == rows[0]["ratio_max"] == 1.0
    assert all(r["median"] > 0 and r["ratio_min"] <= r["ratio"] <= r["ratio_max"] for r in rows)
    table = _parse_rows(bench.format_interleaved(rows))
    assert [(r["algo"], r["K"], r["critic"], r["critic action layer"], r["critic target"]) for r in table] == [
        ("mappo", "-", "-", "-", "-"), ("perla_mappo", "2", "mlp", "last", "joint"),
        ("perla_mappo", "2", "factored", "-", "joint"),
    ]


def test_interleaved_specs_put_mappo_first_and_cross_the_perla_options(bench):
    import argparse

    args = argparse.Namespace(seeds=[8, 1], algos=["mappo", "ippo", "perla_mappo"], ks=[16, 64], updates=1,
                              config={"env": "credit"}, critic_archs=["factored", "mlp"], action_layers=["last"],
                              critic_targets=["joint"])
    specs = bench.interleaved_specs(args)
    assert [(s["algo"], s["k"], s["base"].get("critic_arch")) for s in specs] == [
        ("mappo", 1, None), ("ippo", 1, None), ("perla_mappo", 16, "factored"), ("perla_mappo", 64, "factored"),
        ("perla_mappo", 16, "mlp"), ("perla_mappo", 64, "mlp")]
    assert all(s["seeds"] == 8 and s["base"]["env"] == "credit" for s in specs)
    assert [s["base"].get("critic_action_layer") for s in specs] == [None] * 4 + ["last"] * 2


def test_grid_specs_carry_the_config_into_every_row(bench):
    import argparse

    config = {"env": "smax", "map_name": "2s3z"}
    args = argparse.Namespace(seeds=[4], algos=["mappo", "perla_mappo"], no_random=False, action_layers=["last"],
                              ks=[4, 16], updates=1, repeats=3, config=config)
    specs = bench.grid_specs(args)
    assert [(s["algo"], s["k"]) for s in specs] == [("mappo", 1), ("perla_mappo", 4), ("perla_mappo", 16),
                                                    (bench.RANDOM, 1)]
    assert all(s["base"]["env"] == "smax" and s["base"]["map_name"] == "2s3z" for s in specs)
    # the action layer is the MLP Q-critic's only: carried with critic_arch mlp, left out for the factored default
    assert [s["base"].get("critic_action_layer") for s in specs] == [None, None, None, None]
    args.config = dict(config, critic_arch="mlp")
    assert [s["base"].get("critic_action_layer") for s in bench.grid_specs(args)] == [None, "last", "last", None]


def test_a_preset_goes_under_the_given_fields_into_every_interleaved_row(bench):
    import argparse

    config = bench.preset_fields("jaxmarl", {"env": "ant_4x2", "num_envs": 8})
    args = argparse.Namespace(seeds=[8], algos=["mappo", "perla_mappo"], ks=[16], updates=1, config=config,
                              critic_archs=["factored"], action_layers=["last"], critic_targets=["joint"])
    specs = bench.interleaved_specs(args)
    assert [(s["base"]["env"], s["base"]["num_envs"], s["base"]["num_steps"], s["base"]["vf_coef"]) for s in specs] \
        == [("ant_4x2", 8, 300, 4.5)] * 2
    with pytest.raises(ValueError, match="preset='paper' is invalid: allowed are jaxmarl"):
        bench.preset_fields("paper", {})


@pytest.fixture(scope="module")
def bench_device():
    return importlib.import_module("experiments.bench_device")


@pytest.mark.timeout(240)
def test_device_suite_writes_every_row_at_a_tiny_size(bench_device, tmp_path):
    out = tmp_path / "device.json"
    result = bench_device.main(["--seeds", "1", "--ks", "2", "--tiny", "--updates", "1", "--repeats", "1",
                                "--out", str(out)])
    import json

    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert [(r["algo"], r["K"], r["seeds"]) for r in result["rows"]] == [("mappo", None, 1), ("perla_mappo", 2, 1)]
    for row in result["rows"]:
        assert row["median"] > 0 and row["compile_s"] > 0 and row["peak_mib"] > 0
        assert row["peak_device_mib"] is None  # the CPU reports no device memory
    assert result["rows"][1]["critic_target"] in ("joint", "marginal") and result["skipped"] == []
    assert result["extrapolated"] is None  # no 32-seed K=16 row at this size


def test_device_suite_extrapolates_and_skips_past_its_budget(bench_device, tmp_path):
    row = dict(algo="perla_mappo", K=16, seeds=32, median=1e6, compile_s=20.0)
    # 32 seeds x 1e7 steps at 1e6 steps/s is 320 s, plus the compile.
    assert bench_device.extrapolate([row])["wall_s"] == pytest.approx(340.0)
    result = bench_device.main(["--budget-s", "-1", "--out", str(tmp_path / "none.json")])
    assert result["rows"] == [] and len(result["skipped"]) == 3 * 4  # 3 seed counts x (mappo + 3 K)
