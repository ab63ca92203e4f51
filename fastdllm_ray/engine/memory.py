"""How many K/V cache pages an engine gets.

On CUDA with `gpu_memory_utilization` set, what the GPU has room for (opt-in until its sizing
has been checked on a GPU: issue 22). `gpu_memory_utilization` is the share of the
GPU's memory this engine may use in all (weights, activations, CUDA graphs and cache: what vLLM
users know by that name). From it come off what is in use once the model is loaded (its weights,
the CUDA context, anything else on the GPU), the CUDA graphs' pool, the decision step's logits,
and, for every position the pool holds, its K/V and its share of a forward's activations:
nothing bounds a step's query tokens but the pages of the sequences in it (a refresh runs a
whole sequence), so the largest eager forward can hold activations for every pooled position.
Activations and logits are measured here, with one forward and one head over the model's own
weights. The pool is then at most what `max_num_seqs` sequences of `max_model_len` can use;
when the memory holds fewer, requests wait for pages; when it cannot hold one sequence of
`max_model_len`, the engine is refused at start with the figures.

On the CPU, without `gpu_memory_utilization`, and whenever `num_pages` is set, the pool is what it always was: `num_pages`, or
`max_num_seqs` sequences of `max_model_len`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fastdllm_ray.decoding import policy_for
from fastdllm_ray.engine.cuda_graphs import BLOCK_BUCKETS, TOKEN_BUCKETS
from fastdllm_ray.engine.step_inputs import BLOCK_LEN, FIXED, NUM_COLUMNS, Q_LEN, TEMP, TOP_K, block_inputs
from fastdllm_ray.model.fp8 import is_quantized

GIB = 2**30
PROBE_TOKENS = 2048  # the forward whose activation peak is measured (scaled per token)
PROBE_POSITIONS = 256  # decided positions whose logits and confidences are measured (4 rows of 64)


@dataclass(frozen=True)
class MemoryProfile:
    """What one model needs on its GPU, measured once (bytes)."""

    total: int  # the GPU's memory
    in_use: int  # in use with the model loaded: its weights, the CUDA context, other processes
    activation_per_token: float  # peak of a forward over a step's query tokens, per token
    decide_per_position: float  # a greedy decision (output head, confidences), per decided position
    sampling_per_position: float  # the same with temperature > 0 (float64 draws: decided outside graphs)
    kv_per_token: int  # K and V of one position in every layer
    hidden_bytes: int  # one hidden state (the graphs' output buffer holds a bucket of them)


@dataclass(frozen=True)
class KVCachePlan:
    num_pages: int
    page_size: int
    profile: MemoryProfile | None = None  # None: not sized from memory (CPU, or num_pages given)
    utilization: float = 1.0
    reserved: int = 0  # bytes held back for graphs, logits and the runner's buffers
    pages_fit: int | None = None  # pages the memory holds (may exceed what the seats can use)

    def seats_fit(self, seq_len: int) -> int | None:
        """Sequences of seq_len positions the GPU's memory holds at once."""
        return None if self.pages_fit is None else self.pages_fit // -(-seq_len // self.page_size)

    def summary(self) -> str:
        if self.profile is None:
            return f"{self.num_pages} K/V pages of {self.page_size}"
        p = self.profile
        return (f"{self.num_pages} K/V pages of {self.page_size} ({self.pages_fit} fit in {self.utilization:g} of "
                f"{p.total / GIB:.1f} GiB: {p.in_use / GIB:.1f} GiB in use with the weights, "
                f"{self.reserved / GIB:.1f} GiB for graphs and logits, {p.kv_per_token / 1024:.0f} KiB of K/V and "
                f"{p.activation_per_token / 1024:.0f} KiB of activations per position)")


def kv_cache_plan(model, config, max_model_len: int) -> KVCachePlan:
    """The pool an Engine(model, config) gets (see the module's docstring)."""
    pages_per_seq = -(-max_model_len // config.page_size)
    if config.num_pages is not None or config.gpu_memory_utilization is None or model.device.type != "cuda":
        return KVCachePlan(config.num_pages or config.max_num_seqs * pages_per_seq, config.page_size)
    return plan_from_profile(profile(model), config, max_model_len, quantized=is_quantized(model))


def plan_from_profile(measured: MemoryProfile, config, max_model_len: int, quantized: bool = False) -> KVCachePlan:
    """Pages for `config` given what the model needs: arithmetic only (the tests give it figures)."""
    seats, page = config.max_num_seqs, config.page_size
    pages_per_seq = -(-max_model_len // page)
    graph_tokens = 0
    if config.cuda_graphs:
        graph_tokens = max([b for b in TOKEN_BUCKETS if b <= seats * max_model_len], default=0)
    decided = seats * BLOCK_BUCKETS[-1]  # every seat deciding a block of the widest graphed width
    act = measured.activation_per_token
    # the graphs' private pool holds its largest capture; a sampling step decides outside graphs
    graph_pool = max(graph_tokens * act, decided * measured.decide_per_position)
    buffers = seats * (max_model_len + 2) * 8 + graph_tokens * measured.hidden_bytes  # canvas, graph output
    reserved = int(graph_pool + decided * measured.sampling_per_position + buffers)
    budget = config.gpu_memory_utilization * measured.total - measured.in_use - reserved
    per_position = measured.kv_per_token + act
    pages_fit = max(0, int(budget // (per_position * page)))
    if pages_fit < pages_per_seq:
        one = pages_per_seq * page * per_position
        raise ValueError(
            f"gpu_memory_utilization: {config.gpu_memory_utilization:g} of the GPU's {measured.total / GIB:.1f} GiB "
            f"leaves {max(budget, 0) / GIB:.2f} GiB for the K/V cache after {measured.in_use / GIB:.1f} GiB in use "
            f"(weights, CUDA context, other processes) and {reserved / GIB:.1f} GiB for CUDA graphs and logits; "
            f"one sequence of max_model_len {max_model_len} needs {one / GIB:.2f} GiB (its K/V and a forward's "
            f"activations). Lower max_model_len or max_num_seqs, raise gpu_memory_utilization"
            + ("" if quantized else ", or load the model with dtype 'fp8' (half the weights' memory)"))
    return KVCachePlan(min(pages_fit, seats * pages_per_seq), page, measured, config.gpu_memory_utilization,
                       reserved, pages_fit)


@torch.inference_mode()
def profile(model, probe_tokens: int = PROBE_TOKENS, probe_positions: int = PROBE_POSITIONS) -> MemoryProfile:
    """Measures on the model's GPU a forward's activations and the decision step's logits and
    confidences, eagerly (compiled blocks need less: the figures err on the safe side)."""
    device = model.device
    cfg = model.config
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    free, total = torch.cuda.mem_get_info(device)
    peaks = []
    with torch.compiler.set_stance("force_eager"):
        for probe in (lambda: probe_forward(model, probe_tokens), lambda: probe_decide(model, probe_positions, False),
                      lambda: probe_decide(model, probe_positions, True)):
            base = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
            probe()
            peaks.append(torch.cuda.max_memory_allocated(device) - base)
    torch.cuda.empty_cache()
    element = torch.empty((), dtype=model.dtype).element_size()
    kv_per_token = 2 * cfg.n_layers * cfg.n_kv_heads * cfg.head_dim * element
    return MemoryProfile(total, total - free, peaks[0] / probe_tokens, peaks[1] / probe_positions,
                         peaks[2] / probe_positions, kv_per_token, cfg.d_model * element)


def probe_forward(model, tokens: int) -> None:
    """A plain forward over `tokens` query tokens: the layers' activations at their peak."""
    model.final_hidden(torch.zeros(1, tokens, dtype=torch.long, device=model.device))


def probe_decide(model, positions: int, sampling: bool) -> None:
    """The family's decision over `positions` positions (rows of the widest graphed block), as
    the runner makes it: the output head over them, then the family's predict."""
    cfg = model.config
    width = BLOCK_BUCKETS[-1]
    n_rows = max(1, positions // width)
    rows = torch.zeros(n_rows, NUM_COLUMNS, dtype=torch.float64, device=model.device)
    rows[:, Q_LEN], rows[:, BLOCK_LEN], rows[:, FIXED] = width, width, 1
    rows[:, TEMP] = 1.0 if sampling else 0.0
    policy = policy_for(cfg.model_type, cfg.mask_token_id)
    rows[:, TOP_K] = policy.default_top_k
    inputs = block_inputs(rows, width, 0, sampling, False)
    hidden = torch.zeros(n_rows * width, cfg.d_model, dtype=model.dtype, device=model.device)
    logits = model.logits(hidden[inputs.hidden_index.reshape(-1)]).view(n_rows, width, -1)
    generator = torch.Generator(device=model.device).manual_seed(0)
    policy.predict(logits, inputs.rules, generator, policy.confidence_fn, cfg.mask_token_id)
