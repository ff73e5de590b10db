"""The committed run archive (docs/bench/runs, written by ``suite.py --archive``) regenerates, without training,
the BENCHMARKS.md tables of every study whose runs are all in it: a published table is the suite's output on
committed data, and a study whose Configs changed since its runs were archived is caught here."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from experiments import sections, studies, suite

ROOT = Path(__file__).resolve().parents[1]
ARCHIVE = ROOT / "docs" / "bench" / "runs"


def archived_studies() -> list[tuple[str, str]]:
    """(study, budget) pairs with a table in BENCHMARKS.md whose every run is finished in the archive."""
    text = (ROOT / "BENCHMARKS.md").read_text()
    found = []
    for name, study in studies.STUDIES.items():
        for budget in ("cpu", "paper"):
            published = sections.read_marked_section(text, suite.section_name(name, budget))
            folders = [suite.run_folder(ARCHIVE, budget, cfg) for cfg in study.configs(budget).values()]
            if published is not None and all((f / "metrics.csv").is_file() for f in folders):
                found.append((name, budget))
    return found


def table_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("| ")]


def test_a_marked_section_reads_back_what_was_written_and_none_when_absent():
    text = sections.replace_marked_section("# B\n\nkept\n", "t", "| a |\n| b |\n")
    assert sections.read_marked_section(text, "t") == "| a |\n| b |" and "kept" in text
    assert sections.read_marked_section(text, "other") is None
    assert sections.read_marked_section("<!-- t:start --> no end", "t") is None


def test_the_archive_holds_at_least_the_k_smax2s3z_study():
    assert ("k-smax2s3z", "cpu") in archived_studies()


@pytest.mark.parametrize("name,budget", archived_studies())
def test_an_archived_study_regenerates_its_published_table(name, budget, tmp_path, monkeypatch):
    shutil.copytree(ARCHIVE, tmp_path / "archive")  # the suite re-archives what it restores: not into the repo
    monkeypatch.setattr(suite, "train", lambda folder, label: pytest.fail(f"{label} is not archived: it would train"))
    body = suite.main(["--study", name, "--budget", budget, "--out", str(tmp_path / "out"), "--archive",
                       str(tmp_path / "archive"), "--figures", str(tmp_path / "figures")])[name]
    published = sections.read_marked_section((ROOT / "BENCHMARKS.md").read_text(), suite.section_name(name, budget))
    assert table_lines(body) == table_lines(published)
    assert len(table_lines(body)) == 1 + len(studies.STUDIES[name].configs(budget))
