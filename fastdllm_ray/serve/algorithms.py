"""`generation_algorithm`: how the LLaDA OpenAI server (NeMo-RL's xp/llada_api) picks a decoding
algorithm by name. Here a name is another way to set the fields that say the same (use_cache /
use_dual_cache, block_cache): which names a model has is its family's (the decoding policy's
`algorithms`); the aliases are the ones that server registers.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from fastdllm_ray.decoding.policy import DecodingPolicy
from fastdllm_ray.params import GenerationParams

# alias -> the name it stands for, as the LLaDA OpenAI server registers them
ALIASES = {"no_cache": "basic", "simple": "basic", "prefix": "prefix_cache", "cache": "prefix_cache",
           "dual": "dual_cache", "double_cache": "dual_cache"}
# the request fields that set a GenerationParams field an algorithm sets (for messages)
_SET_BY = {"cache": "use_cache/use_dual_cache"}


@dataclass(frozen=True)
class Algorithm:
    name: str
    aliases: tuple[str, ...]
    fields: dict[str, Any]  # the GenerationParams fields it sets
    description: str


@dataclass(frozen=True)
class FamilyAlgorithms:
    """One model family's algorithms, and the one its requests get when they set none."""

    algorithms: tuple[Algorithm, ...]
    default: Algorithm

    def accepted(self) -> list[str]:
        return [name for a in self.algorithms for name in (a.name, *a.aliases)]

    def resolve(self, name: str) -> Algorithm:
        """The algorithm a name or alias stands for; ValueError listing this model's names otherwise."""
        wanted = ALIASES.get(name, name)
        for algorithm in self.algorithms:
            if algorithm.name == wanted:
                return algorithm
        raise ValueError(f"generation_algorithm: {name!r} is not one of this model's: {', '.join(self.accepted())}")

    def apply(self, name: str, fields: dict[str, Any]) -> dict[str, Any]:
        """`fields` (GenerationParams fields the request set, None = not sent) with the named
        algorithm's; ValueError naming both when a field the request sent says otherwise."""
        algorithm = self.resolve(name)
        for field, value in algorithm.fields.items():
            sent = fields.get(field)
            if sent is not None and sent != value:
                raise ValueError(
                    f"generation_algorithm: {name!r} sets {field} {value!r}, but the request's "
                    f"{_SET_BY.get(field, field)} set {field} {sent!r}; send one of them, or both meaning the same")
        return {**fields, **algorithm.fields}


@lru_cache(maxsize=None)
def _of_policy_class(policy_class: type[DecodingPolicy]) -> FamilyAlgorithms:
    policy = policy_class()
    algorithms = [Algorithm(name, tuple(a for a, target in ALIASES.items() if target == name), dict(fields),
                            description) for name, (fields, description) in policy_class.algorithms.items()]
    unset = policy.effective(GenerationParams())  # what a request that sets nothing decodes with
    default = next((a for a in algorithms if all(getattr(unset, k) == v for k, v in a.fields.items())), algorithms[0])
    return FamilyAlgorithms(tuple(algorithms), default)


def algorithms_of(policy: DecodingPolicy) -> FamilyAlgorithms:
    return _of_policy_class(type(policy))
