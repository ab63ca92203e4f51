"""Evaluation outputs: answer extraction, the configuration grid, CSV, PNG and the
BENCHMARKS.md section that replaces only itself."""

from __future__ import annotations

import csv

import pytest

from fastdllm_ray.eval import ConfigResult, DecodingConfig, extract_answer, grid, headline
from fastdllm_ray.eval import report
from fastdllm_ray.commands.sections import update_section


@pytest.mark.parametrize("text, value", [
    ("23 + 58 = 81. The answer is 81.", 81),
    ("The answer is 3. The answer is 4.", 4),  # the last one counts
    ("12 - 20 = -8. The answer is -8.", -8),
    ("23 + 58 = 81.", None),
    ("", None),
])
def test_extract_answer_reads_the_final_number(text, value):
    assert extract_answer(text) == value


def test_grid_crosses_caches_rules_and_block_lengths():
    configs = grid(block_lengths=[16, 32])
    assert len(configs) == 3 * 3 * 2
    fixed = DecodingConfig("none", "fixed", 16).params()
    assert fixed.steps == fixed.gen_length == 64 and fixed.threshold is None  # one token per step
    assert DecodingConfig("dual", "threshold", 32).params().threshold == 0.9
    assert DecodingConfig("prefix", "factor", 32).params().factor == 1.0


def test_grid_refuses_unknown_names_by_field():
    with pytest.raises(ValueError, match="cache"):
        grid(caches=["full"])
    with pytest.raises(ValueError, match="schedule"):
        grid(schedules=["greedy"])


def _results() -> list[ConfigResult]:
    base = ConfigResult(DecodingConfig("none", "fixed", 32), 10, 9, 640, 350, 640, 2.0, [])
    fast = ConfigResult(DecodingConfig("dual", "threshold", 32), 10, 9, 160, 350, 640, 0.5, [])
    return [base, fast]


def test_headline_compares_dual_threshold_with_the_baseline():
    lines = headline(_results())
    assert "accuracy 90.0%" in lines[0] and "mean NFE 64.0" in lines[0]
    assert "+0.0 points" in lines[1] and "4.0x fewer forwards" in lines[1]


def test_csv_and_plot_are_written(tmp_path):
    results = _results()
    report.write_csv(results, tmp_path / "eval.csv")
    rows = list(csv.DictReader((tmp_path / "eval.csv").open()))
    assert [r["cache"] for r in rows] == ["none", "dual"]
    assert rows[1]["tokens_per_forward"] == "4.000" and rows[0]["accuracy"] == "0.9000"
    report.write_plot(results, tmp_path / "eval.png", "test")
    assert (tmp_path / "eval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_benchmarks_section_replaces_only_itself(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\n<!-- BEGIN other -->\nkeep me\n<!-- END other -->\n")
    update_section(path, "eval", "first")
    update_section(path, "eval", report.markdown_table(_results()))
    text = path.read_text()
    assert "keep me" in text and "first" not in text
    assert text.count("<!-- BEGIN eval -->") == 1
    assert "| dual | threshold 0.9 | 32 | 90.0 | 16.0 | 4.00 |" in text
