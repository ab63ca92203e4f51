"""What the engine hands back: a final block as it completes, a request's result, and for
requests that ask for them, what each step committed."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class GenerationResult:
    request_id: str
    prompt_ids: list[int]
    token_ids: list[int]  # the answer: gen_length ids, or up to and including the end token
    nfe: int  # forwards run for this request
    finish_reason: str  # "stop" (end token) | "length" | "cancelled" | "error"
    block_times: list[float] = field(default_factory=list)  # seconds each decoded block took
    time_to_first_block: float | None = None  # seconds from arrival to the first final block
    latency: float | None = None  # seconds from arrival to the end
    error: str | None = None
    cached_tokens: int = 0  # prompt tokens whose K/V came from the prefix cache (not computed)
    forwards_saved: int = 0  # forwards the prefix cache spared (a prefill it held whole)

    @property
    def tokens_per_forward(self) -> float:
        return len(self.token_ids) / self.nfe if self.nfe else 0.0


@dataclass
class StepEvent:
    """What one forward committed for one request (only for requests with stream_steps)."""

    block: int  # index of the block the step belongs to
    step: int  # forwards run in that block so far, this one included (1 = its first)
    positions: list[int]  # answer positions (0 = first answer token) committed by this step
    token_ids: list[int]  # the token committed at each of those positions
    remaining: int  # positions of the block still masked after this step
    # the answer row the step belongs to (decoding/policy.py step_row): rows tile the answer
    # from position 0, one per block; a client draws a row when a step of a new row arrives
    row_start: int = 0  # answer position of the row's first cell
    row_cells: int = 0  # positions in the row
    answer_cells: int = 0  # answer positions the request may fill at most (past its last row: never decoded)


@dataclass
class BlockOutput:
    request_id: str
    token_ids: list[int]  # tokens that became final with this block (already cut at the end)
    finished: bool
    result: GenerationResult | None = None  # set on the last output of a request
    step: StepEvent | None = None  # with stream_steps: this step's commits (token_ids may be [])
    cached_tokens: int = 0  # the request's prompt tokens served from the prefix cache (known from its first output)
