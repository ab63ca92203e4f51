"""Conversations evaluated turn by turn, as a person chats: turn k is asked with turns
1..k-1 and the model's own answers to them in the history, and scored against the value the
conversation's arithmetic gives (so a wrong earlier answer that a follow-up builds on counts
against the follow-up too). One ConfigResult per turn."""

from __future__ import annotations

from collections.abc import Callable

from fastdllm_ray.eval.configs import DecodingConfig
from fastdllm_ray.eval.run import ConfigResult, Conversation, Replies, score
from fastdllm_ray.train.chats import Chat

# (conversations, config, progress) -> their replies, in order: engine_replies or server_replies
Replier = Callable[[list[Conversation], DecodingConfig, object], Replies]


def run_turns(replier: Replier, chats: list[Chat], config: DecodingConfig, progress=None) -> list[ConfigResult]:
    """Per-turn results: [turn 1, turn 2, ...] up to the longest conversation."""
    answers: list[list[str]] = [[] for _ in chats]
    results = []
    for turn in range(1, max(len(c.turns) for c in chats) + 1):
        live = [i for i, chat in enumerate(chats) if len(chat.turns) >= turn]
        replies = replier([chats[i].messages(turn, answers[i]) for i in live], config, progress)
        for i, reply in zip(live, replies.replies):
            answers[i].append(reply.text)
        results.append(score(config, [chats[i].turns[turn - 1] for i in live], replies))
    return results


def evaluate_turns(chats: list[Chat], configs: list[DecodingConfig], replier: Replier,
                   show_progress: bool = True) -> list[list[ConfigResult]]:
    """run_turns for every configuration, with one progress bar for all of them."""
    from tqdm import tqdm

    questions = sum(len(c.turns) for c in chats)
    results = []
    with tqdm(total=questions * len(configs), unit="turn", disable=not show_progress, dynamic_ncols=True) as bar:
        for config in configs:
            bar.set_description(f"conversations, {config.name}")
            results.append(run_turns(replier, chats, config, bar))
    return results


def turn_headline(results: list[list[ConfigResult]]) -> list[str]:
    """One line per configuration: accuracy on each turn."""
    lines = []
    for per_turn in results:
        turns = ", ".join(f"turn {i + 1} {100 * r.accuracy:.1f}%" for i, r in enumerate(per_turn))
        lines.append(f"conversations ({per_turn[0].num_problems} held-out, {per_turn[0].config.name}): {turns}")
    return lines
