"""The row of each step event (`row_start`, `row_cells`): rows tile the answer from position 0,
one per block decoded, every commit falls in its step's row, and the rows end where the answer
can end (`answer_cells`). For LLaDA and Dream a row is a block of the canvas; for Fast-dLLM v2
and LLaDA2.0 the first block holds the prompt's tail, and v2's id carried out of a block opens
the next block's row (after the last block it is a row of one)."""

from __future__ import annotations

import pytest

from fastdllm_ray import GenerationParams
from tests.engine.test_step_events import run_pair


def rows_of(events) -> list[tuple[int, int]]:
    """The distinct rows in the order the events arrive."""
    rows: list[tuple[int, int]] = []
    for event in events:
        row = (event.row_start, event.row_cells)
        if not rows or rows[-1] != row:
            assert row not in rows, "a row's steps arrive together"
            rows.append(row)
    return rows


def check_rows(outputs, params: GenerationParams) -> list[tuple[int, int]]:
    """Asserts what holds for every family; returns the rows."""
    events, result = [o.step for o in outputs], outputs[-1].result
    answer = result.token_ids
    rows = rows_of(events)
    assert rows[0][0] == 0 and all(cells > 0 for _, cells in rows)
    assert all(start + cells == following for (start, cells), (following, _) in zip(rows, rows[1:])), rows
    committed = {}
    for event in events:
        assert event.answer_cells == events[0].answer_cells
        for position, token in zip(event.positions, event.token_ids, strict=True):
            assert event.row_start <= position < event.row_start + event.row_cells, (position, event)
            committed[position] = token
    assert [committed[i] for i in range(len(answer))] == answer  # the commits add up to the answer
    last_start, last_cells = rows[-1]
    assert last_start < len(answer) <= last_start + last_cells  # the last row holds the answer's end
    assert last_start + last_cells <= events[0].answer_cells
    if result.finish_reason == "length":
        assert last_start + last_cells == len(answer) == events[0].answer_cells
    return rows


@pytest.mark.parametrize("cache", ["none", "dual"])
def test_llada_rows_are_its_blocks_cut_at_the_length(ref_model, cache):
    params = GenerationParams(steps=24, gen_length=20, block_length=8, cache=cache, stop_at_eos=False)
    with_steps, _ = run_pair(ref_model, params)
    assert check_rows(with_steps, params) == [(0, 8), (8, 8), (16, 4)]
    assert all(o.step.row_start == 8 * o.step.block for o in with_steps)


@pytest.mark.parametrize("cache, rows", [("dual", [(0, 8), (8, 8)]), ("none", [(0, 16)])])
def test_dream_rows_are_its_blocks_one_without_a_cache(dream_model, cache, rows):
    # without a cache Dream decodes one block as long as the answer
    params = GenerationParams(steps=16, gen_length=16, block_length=8, cache=cache, stop_at_eos=False)
    with_steps, _ = run_pair(dream_model, params)
    assert check_rows(with_steps, params) == rows


@pytest.mark.parametrize("prompt_len, rows", [
    (7, [(0, 25), (25, 32), (57, 1)]),  # the first block holds the prompt's 7-token tail
    (32, [(0, 32), (32, 32), (64, 1)]),  # the prefill's carried id opens the first block
    (40, [(0, 24), (24, 32), (56, 1)]),
])
@pytest.mark.parametrize("block_cache", [False, True])
def test_v2_rows_open_with_the_carried_id_and_end_with_a_row_of_one(v2_model, prompt_len, rows, block_cache):
    prompt = [(17 * i + 5) % 190 + 1 for i in range(prompt_len)]
    params = GenerationParams(gen_length=64, threshold=0.9, block_cache=block_cache, stop_at_eos=False)
    with_steps, plain = run_pair(v2_model, params, prompt)
    assert with_steps[-1].result.token_ids == plain[-1].result.token_ids
    assert check_rows(with_steps, params) == rows
    # the store forward commits the next block's first cell
    for event in (o.step for o in with_steps):
        if event.positions and event.positions[0] == event.row_start and event.row_start > 0:
            assert event.positions == [event.row_start]


def test_v2_rows_stop_with_the_answer(v2_model, v2_reference):
    stopped = [c for c in v2_reference["cases"] if c["stopped"] and c["max_new_tokens"] > c["block_size"]]
    case = max(stopped, key=lambda c: c["max_new_tokens"] - len(c["output"]))  # the most blocks it never decoded
    params = GenerationParams(gen_length=case["max_new_tokens"], block_length=case["block_size"],
                              sub_block_length=case["small_block_size"], threshold=case["threshold"],
                              block_cache=case["use_block_cache"])
    with_steps, _ = run_pair(v2_model, params, case["prompt"])
    assert with_steps[-1].result.finish_reason == "stop"
    rows = check_rows(with_steps, params)
    assert rows[-1][0] + rows[-1][1] < with_steps[0].step.answer_cells  # rows never reached: never decoded


@pytest.mark.parametrize("prompt_len, gen_length, rows", [
    (5, 40, [(0, 11), (11, 16), (27, 13)]),  # the last block reaches past the length: cut there
    (16, 32, [(0, 16), (16, 16)]),
])
def test_llada2_rows_start_after_the_prompts_tail(llada2_model, prompt_len, gen_length, rows):
    prompt = [(13 * i + 3) % 400 + 1 for i in range(prompt_len)]
    params = GenerationParams(gen_length=gen_length, block_length=16, steps_per_block=8, stop_at_eos=False)
    with_steps, _ = run_pair(llada2_model, params, prompt)
    assert check_rows(with_steps, params) == rows
