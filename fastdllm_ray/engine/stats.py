"""EngineStats: running counters the serving layer turns into metrics."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class EngineStats:
    forwards: Counter = field(default_factory=Counter)  # sequence-forwards by kind: full / prefix / dual
    rows: int = 0  # sequence-forwards (the sum of NFE over requests)
    model_forwards: int = 0  # batched forwards run (one per engine step with live sequences)
    graph_captures: int = 0  # CUDA graphs captured so far (bounded: one per size bucket)
    kv_cache_usage: float = 0.0  # share of K/V cache pages held by live sequences
    computed_positions: int = 0
    attended_positions: int = 0
    committed_tokens: int = 0
    finished: Counter = field(default_factory=Counter)  # by finish reason
    last_batch_size: int = 0  # rows in the last engine iteration
    max_batch_size: int = 0
    prompt_tokens: int = 0  # of the requests admitted
    cached_prompt_tokens: int = 0  # of those, served from the prefix cache's shared pages
    forwards_saved: int = 0  # prefill forwards the prefix cache spared
    cached_pages: int = 0  # pages registered in the prefix cache (held or idle)
    evictions: int = 0  # cached pages evicted to make room

    @property
    def cache_hit_rate(self) -> float:
        """Attended key positions served from the cache / all attended positions."""
        if not self.attended_positions:
            return 0.0
        return 1.0 - self.computed_positions / self.attended_positions

    @property
    def prefix_cache_hit_rate(self) -> float:
        """Prompt tokens served from the prefix cache / prompt tokens (block-diffusion families)."""
        return self.cached_prompt_tokens / self.prompt_tokens if self.prompt_tokens else 0.0

    @property
    def tokens_per_forward(self) -> float:
        return self.committed_tokens / self.rows if self.rows else 0.0
