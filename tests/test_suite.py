"""experiments/suite.py: every study's Configs validate at both budgets, and a two-run study runs end to end at the
smoke budget through run.py children, writes its table and figures, and skips finished runs when run again."""

from __future__ import annotations

import sys

import pytest
from programs import ROOT

sys.path.insert(0, str(ROOT / "experiments"))  # the scripts import each other as siblings
import studies  # noqa: E402
import suite  # noqa: E402


@pytest.mark.parametrize("budget", studies.BUDGETS)
def test_every_study_validates_and_keeps_fields_apart_from_the_budget(budget):
    for study in studies.STUDIES.values():
        configs = study.configs(budget)
        assert all(study.baseline_for(label) in configs for label in configs), study.name
        if budget == "paper":
            assert all(cfg.num_seeds >= 8 for cfg in configs.values()), study.name
        # Runs of a study share every field but those their label names, so their seeds are common.
        assert len({(cfg.seed, cfg.num_seeds, cfg.total_timesteps, cfg.env) for cfg in configs.values()}) == 1


def test_unknown_budget_is_refused():
    with pytest.raises(ValueError, match="budget='huge' is invalid: allowed are smoke, paper"):
        next(iter(studies.STUDIES.values())).configs("huge")


@pytest.mark.timeout(300)
def test_smoke_study_runs_end_to_end_and_resumes_without_retraining(tmp_path, monkeypatch):
    tiny = studies.Study(
        "tiny", "Tiny credit game", common=dict(env="credit", env_kwargs={"num_agents": 2}),
        runs={"mappo": dict(algo="mappo"), "perla_mappo joint td K=1": dict(algo="perla_mappo", k=1),
              "perla_mappo joint td K=2": dict(algo="perla_mappo", k=2)},
        paper=dict(total_timesteps=64, num_seeds=8), against="k",
    )
    monkeypatch.setitem(suite.STUDIES, "tiny", tiny)
    argv = ["--study", "tiny", "--budget", "smoke", "--out", str(tmp_path / "runs"), "--figures",
            str(tmp_path / "figs"), "--write", str(tmp_path / "BENCH.md")]
    body = suite.main(argv)["tiny"]
    rows = [line for line in body.splitlines() if line.startswith("| ") and not line.startswith("| run")]
    assert [row.split(" | ")[0].lstrip("| ") for row in rows] == list(tiny.runs)
    assert "minus mappo" in body and "(2 seeds)" in body  # paired differences over the smoke budget's 2 seeds
    assert (tmp_path / "figs" / "tiny-smoke.png").stat().st_size > 0
    assert (tmp_path / "figs" / "tiny-smoke-k.png").stat().st_size > 0
    assert "<!-- tiny:start -->" in (tmp_path / "BENCH.md").read_text()
    folders = sorted(f for f in (tmp_path / "runs" / "smoke").iterdir() if f.is_dir())
    assert (tmp_path / "runs" / "smoke" / "tiny.md").read_text().strip() == body.strip()
    assert len(folders) == 3 and all((f / "metrics.csv").is_file() for f in folders)
    logs = {f: (f / "run.log").read_bytes() for f in folders}
    suite.main(argv)  # everything finished: nothing retrains, so no child writes to a log again
    assert {f: (f / "run.log").read_bytes() for f in folders} == logs
    assert all(len((f / suite.WALL_FILE).read_text().split()) == 1 for f in folders)


def test_wall_cell_says_when_a_run_was_resumed(tmp_path):
    (tmp_path / suite.WALL_FILE).write_text("60.0\n30.0\n")
    assert suite.wall_cell(tmp_path) == "1.5 (resumed, 2 launches)"
    (tmp_path / suite.WALL_FILE).write_text("90.0\n")
    assert suite.wall_cell(tmp_path) == "1.5"
