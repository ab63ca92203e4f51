"""`fastdllm-ray eval` end to end on the shipped model: table, CSV, PNG and the BENCHMARKS section."""

from __future__ import annotations

import csv

import pytest

from fastdllm_ray.cli import main


def test_eval_command_writes_table_csv_plot_and_section(tmp_path, capsys):
    bench = tmp_path / "BENCHMARKS.md"
    rc = main(["eval", "--num-problems", "12", "--cache", "dual", "--schedule", "fixed,threshold",
               "--block-lengths", "32", "--out-dir", str(tmp_path), "--benchmarks", str(bench), "--no-progress"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "threshold 0.9" in out and "fixed 1/step" in out
    rows = list(csv.DictReader((tmp_path / "eval.csv").open()))
    assert [(r["cache"], r["schedule"]) for r in rows] == [("dual", "fixed"), ("dual", "threshold")]
    assert all(int(r["num_problems"]) == 12 for r in rows)
    assert (tmp_path / "eval.png").stat().st_size > 0
    section = bench.read_text()
    assert "<!-- BEGIN eval -->" in section and "fastdllm-ray eval" in section


def test_eval_command_refuses_unknown_cache_by_flag(tmp_path):
    with pytest.raises(SystemExit, match="cache"):
        main(["eval", "--num-problems", "1", "--cache", "full", "--out-dir", str(tmp_path)])
