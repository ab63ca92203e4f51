"""Conversations for the shipped models: 1-4 turns of sums and differences, each answer
written as the model writes it, where a follow-up asks a new sum ("And what is 58-27?") or
works on the previous answer ("Now subtract 5." answered "77 - 5 = 72. The answer is 72.").

Held out by construction, twice over:
- problems: every turn's arithmetic has a key (data.sum_key / data.difference_key; "Now
  subtract 5" after 77 is the problem 77-5) and a training conversation holds only keys of
  the training split, a held-out one only keys of the held-out split (data.split_of);
- phrasings: a phrasing is a lead-in and a question ("Now " + "subtract {n}."); some lead-ins
  never occur in training, and one combination in PHRASING_MODULUS of the others is kept for
  evaluation. Held-out phrasings reuse training words in new combinations (no lead-in changes
  the arithmetic), so they test the reading of a question, not a vocabulary never taught.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from fastdllm_ray.train import data
from fastdllm_ray.train.data import Problem

PHRASING_MODULUS = 5
LEAD_INS = ("", "And ", "Now ", "Then ", "OK, ", "Next, ", "So ", "Great. ", "Thanks! ", "Good, ")
HELD_OUT_LEAD_INS = ("Alright, ", "Okay, so ", "Cool. ")  # never in training
# the question after the lead-in; {e} is the expression ("37+45"), {n} the number to apply
ASK = ("what is {e}?", "what about {e}?", "how much is {e}?", "{e}?", "what's {e}?", "compute {e}.",
       "tell me {e}.", "how about {e}?", "what do you get for {e}?")
ADD = ("add {n}.", "add {n} to that.", "add {n} to it.", "plus {n}?", "what if I add {n}?", "increase it by {n}.",
       "what is that plus {n}?", "add another {n}.")
SUBTRACT = ("subtract {n}.", "subtract {n} from that.", "subtract {n} from it.", "minus {n}?",
            "what if I subtract {n}?", "decrease it by {n}.", "take away {n}.", "what is that minus {n}?")
# the examples of follow-ups, kept in training whatever the hash says
NAMED = {("And ", "what is {e}?"), ("Now ", "subtract {n}."), ("", "what about {e}?"), ("", "what is {e}?")}


def phrasing_split(lead_in: str, question: str) -> str:
    if lead_in in HELD_OUT_LEAD_INS:
        return "eval"
    if (lead_in, question) in NAMED:
        return "train"
    digest = hashlib.sha1(f"{lead_in}|{question}".encode()).digest()
    return "eval" if int.from_bytes(digest[:4], "big") % PHRASING_MODULUS == 0 else "train"


def phrasings(questions: tuple[str, ...], split: str) -> list[tuple[str, str]]:
    return [(lead, q) for lead in LEAD_INS + HELD_OUT_LEAD_INS for q in questions
            if phrasing_split(lead, q) == split]


def phrase(lead_in: str, question: str, **values: int | str) -> str:
    text = question.format(**values)
    # a sentence starts with a capital; so does one after "Great. " or "Thanks! "
    if not lead_in or lead_in.endswith((". ", "! ")):
        text = text[0].upper() + text[1:]
    return lead_in + text


@dataclass(frozen=True)
class Chat:
    """A conversation: the user's questions and the answers the model is taught to write.
    Asking turn k sends turns 1..k-1 with their answers, then turn k's question."""

    turns: tuple[Problem, ...]

    def messages(self, upto: int | None = None, answers: list[str] | None = None) -> list[dict[str, str]]:
        """The messages that ask turn `upto` (1-based; default the last), the history's answers
        from `answers` where given (the model's own, in an evaluation), else the taught ones."""
        upto = len(self.turns) if upto is None else upto
        out: list[dict[str, str]] = []
        for i, turn in enumerate(self.turns[:upto]):
            out.append({"role": "user", "content": turn.question})
            if i < upto - 1:
                out.append({"role": "assistant", "content": answers[i] if answers else turn.answer})
        return out


def _ask(rng: random.Random, lead: tuple[str, str]) -> Problem:
    base = (data.add if rng.random() < 0.5 else data.subtract)(rng)
    expression = base.question.removeprefix("What is ").removesuffix("?")
    return Problem(phrase(*lead, e=expression), base.answer, base.value, f"chat_{base.task}", base.key)


def _apply(rng: random.Random, lead: tuple[str, str], previous: int, add: bool) -> Problem:
    """The previous answer plus or minus a number (results stay within 0..198)."""
    high = min(9 if rng.random() < 0.5 else 99, 99 if add else previous)
    n = rng.randint(min(1, high), high)
    value = previous + n if add else previous - n
    sign = "+" if add else "-"
    key = data.sum_key(previous, n) if add else data.difference_key(previous, n)
    answer = f"{previous} {sign} {n} = {value}. The answer is {value}."
    return Problem(phrase(*lead, n=n), answer, value, "chat_add_on" if add else "chat_take_off", key)


def _turn(rng: random.Random, split: str, pools: dict, previous: int | None) -> Problem:
    """One turn whose problem is of `split` (drawn again until it is)."""
    for _ in range(1000):
        if previous is None or rng.random() < 0.5:
            # a first question is plain ("What is 37+45?") half the time
            plain = previous is None and pools["plain"] and rng.random() < 0.5
            turn = _ask(rng, rng.choice(pools["plain"] if plain else pools["ask"]))
        else:
            add = previous <= 99 and (previous == 0 or rng.random() < 0.5)
            turn = _apply(rng, rng.choice(pools["add" if add else "subtract"]), previous, add)
        if data.split_of(turn.split_key) == split:
            return turn
    raise RuntimeError("no problem of the split found")  # never: each split holds thousands


def chats(count: int, seed: int, split: str, turns: int | tuple[int, int] = (1, 4)) -> list[Chat]:
    """`count` conversations of `split` (problems and phrasings), each of `turns` turns (a
    number, or a range drawn uniformly), deterministic for a seed. A held-out set has no
    conversation twice."""
    if split not in data.SPLITS:
        raise ValueError(f"split: {split!r} is not one of {data.SPLITS}")
    low, high = (turns, turns) if isinstance(turns, int) else turns
    if not 1 <= low <= high:
        raise ValueError(f"turns: {turns!r} must be >= 1 (a number or a range low <= high)")
    pools = {"ask": phrasings(ASK, split), "add": phrasings(ADD, split), "subtract": phrasings(SUBTRACT, split)}
    pools["plain"] = [p for p in pools["ask"] if p[0] == ""]
    rng = random.Random(f"chat-{split}-{seed}")
    out: list[Chat] = []
    seen: set[tuple[str, ...]] = set()
    while len(out) < count:
        problems: list[Problem] = []
        for _ in range(rng.randint(low, high)):
            problems.append(_turn(rng, split, pools, problems[-1].value if problems else None))
        questions = tuple(p.question for p in problems)
        if split == "eval" and questions in seen:
            continue
        seen.add(questions)
        out.append(Chat(tuple(problems)))
    return out
