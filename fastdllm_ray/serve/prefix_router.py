"""PrefixAffinityRouter: Serve's request router for an engine deployment whose model shares prompt
prefixes (block-diffusion families: the engine's `sharing`). builder.py installs it where the
checkpoint's family shares, or may (a hub id whose config.json is not on this machine); the
replicas then say whether they share, and where they do not it is Serve's power of two choices.

The rule. A request goes to the replica that already holds the longest prefix of its prompt (of
several, the one with the fewest ongoing requests) unless that replica has at least `imbalance`
more ongoing requests than the least busy replica; then, as does every request whose prefix no
replica holds, it goes by Serve's power of two choices (today's load-aware routing). `imbalance` is
half the engine's seats (max_num_seqs // 2, at least 1; 8 for the default 16 seats): below that the
holder runs the request in the same batched forwards as its others and skips the prefill of the
prefix (a 2,000-token system prompt is 40 times the tokens of a 50-token question); beyond it the
request would wait for a seat or be decoded in a batch half a batch larger than elsewhere, which
costs more than the prefill it saves. A hot prefix thus spreads: the replica a spilled request
lands on holds the prefix too and becomes one of its holders.

Ongoing requests are Serve's own count per replica (running + waiting in the engine), read from
the router's queue-length cache and probed where the cache has none, before every request with a
whole block (Serve's own choice probes only its two candidates, and takes a cached busy one over an
idle one it has not heard from lately); a request is counted on its replica as soon as it is chosen.

What a replica holds: the router remembers, for every page key of every prompt it routed (the
engine's keys: `prefix_keys` over the prompt's whole blocks, with the request's block length and
the engine's page size), the replicas it sent it to, least recently routed keys forgotten beyond
`max_keys` (as many pages as 32 replicas of the default pool hold). Asking the replicas instead
(Serve's `record_routing_stats`) would be exact about evictions but seconds late (the controller
polls every replica each period, 10 s by default), so a burst of requests with a new system prompt
would scatter before any replica reported it; this memory is current at once, and where it is
wrong (the replica evicted the prefix since) the request costs one prefill there, which caches the
prefix again: no worse than routing blind. Each ingress replica's router has its own memory (one
ingress replica by default); with several, a prefix is held once per ingress replica at most.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Optional

import numpy as np
from ray.serve._private.request_router.pow_2_router import PowerOfTwoChoicesRequestRouter
from ray.serve.request_router import PendingRequest, ReplicaID, RequestRouter, RunningReplica

from fastdllm_ray.engine.page_pool import prefix_keys

MAX_KEYS = 1 << 16  # 32 replicas x the default pool's 2,048 pages (16 seats x 8,192 tokens / 64)
ROUTED_METHOD = "generate"  # EngineReplica.generate(prompt_ids, params, request_id, stream_steps)


def imbalance_for(max_num_seqs: int) -> int:
    """How many more ongoing requests than the least busy replica make a holder too busy."""
    return max(1, max_num_seqs // 2)


class PrefixTable:
    """Page key -> the replicas a prompt with that key was sent to; least recently routed keys go
    first beyond `max_keys`."""

    def __init__(self, max_keys: int = MAX_KEYS) -> None:
        if max_keys < 1:
            raise ValueError("max_keys: must be >= 1")
        self.max_keys = max_keys
        self._holders: OrderedDict[bytes, dict[Any, None]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._holders)

    def record(self, keys: list[bytes], replica: Any) -> None:
        for key in keys:
            holders = self._holders.pop(key, None) or {}
            holders.pop(replica, None)
            holders[replica] = None  # the most recent holder last
            self._holders[key] = holders
        while len(self._holders) > self.max_keys:
            self._holders.popitem(last=False)

    def longest_holders(self, keys: list[bytes], alive) -> list:
        """The live replicas holding the longest prefix of `keys` any live replica holds."""
        for key in reversed(keys):
            holders = [replica for replica in self._holders.get(key, ()) if replica in alive]
            if holders:
                return holders
        return []

    def forget(self, replica: Any) -> None:
        for holders in self._holders.values():
            holders.pop(replica, None)


def choose_holder(holders: list, ongoing: dict, imbalance: int) -> Optional[Any]:
    """The least busy holder, unless it has `imbalance` or more ongoing requests than the least
    busy replica of all (`ongoing`: replica -> its ongoing requests; unknown ones are skipped)."""
    known = [h for h in holders if h in ongoing]
    if not known or not ongoing:
        return None
    best = min(known, key=lambda h: ongoing[h])
    return best if ongoing[best] - min(ongoing.values()) < imbalance else None


def shared_page_size(metadata: list[dict]) -> Optional[int]:
    """The page size of replicas that all share prefixes (their `record_replica_metadata`), else
    None: a replica that does not share, or has not said, or two page sizes (a rolling update)."""
    sizes = {m.get("page_size") if m.get("prefix_sharing") else None for m in metadata}
    return sizes.pop() if len(sizes) == 1 else None


def request_keys(pending: Optional[PendingRequest], page_size: int) -> list[bytes]:
    """The page keys of a generate request's prompt (its whole blocks), [] for any other call."""
    if pending is None or pending.metadata.call_method != ROUTED_METHOD or len(pending.args) < 2:
        return []
    prompt, params = pending.args[0], pending.args[1]
    block = getattr(params, "block_length", 0)
    if not isinstance(prompt, list) or not isinstance(block, int) or block < 1:
        return []
    whole = len(prompt) // block * block
    return [key for key, _ in prefix_keys(np.asarray(prompt[:whole], dtype=np.int64), page_size, block)]


class PrefixAffinityRouter(PowerOfTwoChoicesRequestRouter):
    """The module's rule, as a Serve request router (`request_router_config`). Whether the engines
    share, and their page size, the replicas say once they are ready (`record_replica_metadata`);
    while any replica does not share (or before they all have said), this is Serve's own power of
    two choices, unchanged. While they share, a chosen replica goes to the request it was chosen
    for (Serve's first-come matching would hand a holder chosen for one prefix to an older request
    of another)."""

    def initialize_state(self, imbalance: int = 1, max_keys: int = MAX_KEYS) -> None:
        if not isinstance(imbalance, int) or imbalance < 1:
            raise ValueError(f"imbalance: must be a whole number >= 1, got {imbalance!r}")
        self.imbalance = imbalance
        self.table = PrefixTable(max_keys)
        self.page_size: Optional[int] = None  # set while every replica shares, with this page size

    def update_replicas(self, replicas: list[RunningReplica]) -> None:
        super().update_replicas(replicas)
        self.page_size = shared_page_size([replica.replica_metadata for replica in replicas])

    async def choose_replicas(self, candidate_replicas: list[RunningReplica],
                              pending_request: Optional[PendingRequest] = None) -> list[list[RunningReplica]]:
        fallback = await super().choose_replicas(candidate_replicas, pending_request)
        keys = request_keys(pending_request, self.page_size) if self.page_size else []
        if not keys or not fallback:
            return fallback
        by_id = {replica.replica_id: replica for replica in candidate_replicas}
        # every replica's figure, probed where the cache has none (Serve's own choice would take a
        # cached busy replica over an idle one it has not heard from lately): a new prefix goes
        # where the load is not, and stays there
        ongoing = await self._ongoing(candidate_replicas)
        holders = self.table.longest_holders(keys, by_id)
        holder = choose_holder(holders, ongoing, self.imbalance) if holders else None
        # a full holder is passed over by Serve's selection, which then tries the fallback pair
        return [[by_id[holder]], *fallback] if holder is not None else fallback

    def _fulfill_next_pending_request(self, replica: RunningReplica, request_metadata=None) -> None:
        if self.page_size is None:  # Serve's own: the oldest pending request takes the replica
            return super()._fulfill_next_pending_request(replica, request_metadata)
        matched = self._get_pending_request_matching_internal_request_id(request_metadata) is not None
        RequestRouter._fulfill_next_pending_request(self, replica, request_metadata)
        # Serve counts a request on its replica when it is sent, which in a burst is after every
        # routing task has chosen: each would see the same stale figures and pick the same holder.
        # Counted at once instead; the replica's own count replaces this when it accepts.
        ongoing = self._replica_queue_len_cache.get(replica.replica_id)
        if matched and ongoing is not None:
            self._replica_queue_len_cache.update(replica.replica_id, ongoing + 1)

    async def _ongoing(self, replicas: list[RunningReplica]) -> dict[ReplicaID, int]:
        ongoing, unknown = {}, []
        for replica in replicas:
            cached = self._replica_queue_len_cache.get(replica.replica_id) if self._use_replica_queue_len_cache else None
            if cached is None:
                unknown.append(replica)
            else:
                ongoing[replica.replica_id] = cached
        if unknown:
            for replica, count in await self._probe_queue_lens(unknown, 0):
                if count is not None:
                    ongoing[replica.replica_id] = count
        return ongoing

    def on_request_routed(self, pending_request: PendingRequest, replica_id: ReplicaID, result) -> None:
        keys = request_keys(pending_request, self.page_size) if self.page_size else []
        if keys:
            self.table.record(keys, replica_id)

    def on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        super().on_replica_actor_died(replica_id)
        self.table.forget(replica_id)
