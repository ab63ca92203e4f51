"""Synthetic chat tasks for the shipped model: arithmetic (word) problems with worked
answers, multi-step sums and products, list and counting questions.

Every answer ends with "The answer is N." so an evaluation can read N back. Problems are
split for good by a hash of their key: one in HELDOUT_MODULUS keys belongs to the held-out
(evaluation) split and is never drawn for training, whatever the seed. A sum's or a
difference's key is its arithmetic ("12+7", operands sorted, or "19-7"), whatever the wording,
so a held-out sum is held out as a bare question, as a word problem and inside a conversation
(chats.py); any other problem's key is its question text.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

HELDOUT_MODULUS = 10
SPLITS = ("train", "eval")

NAMES = ("Tom", "Sara", "Ali", "Mia", "Ben", "Lena", "Omar", "Zoe", "Ravi", "Ana", "Leo", "Ivy")
ITEMS = ("apples", "pencils", "books", "coins", "cards", "stamps", "marbles", "cookies", "shells", "stickers")


@dataclass(frozen=True)
class Problem:
    question: str
    answer: str  # the worked answer the model is trained to write
    value: int  # the number after "The answer is"
    task: str
    key: str = ""  # what the split is decided by (empty: the question text)

    @property
    def split_key(self) -> str:
        return self.key or self.question


def sum_key(a: int, b: int) -> str:
    """A sum whatever its order or wording: 7+12 is the same problem as 12+7."""
    return f"{min(a, b)}+{max(a, b)}"


def difference_key(a: int, b: int) -> str:
    return f"{a}-{b}"


def _number(rng: random.Random, low: int = 0) -> int:
    """One- and two-digit numbers equally often, so small sums like 2+2 are common."""
    return rng.randint(low, 9) if rng.random() < 0.5 else rng.randint(10, 99)


def _done(steps: list[str], value: int, question: str, task: str, key: str = "") -> Problem:
    return Problem(question, " ".join(steps + [f"The answer is {value}."]), value, task, key)


def add(rng: random.Random) -> Problem:
    a, b = _number(rng), _number(rng)
    return _done([f"{a} + {b} = {a + b}."], a + b, f"What is {a}+{b}?", "add", sum_key(a, b))


def subtract(rng: random.Random) -> Problem:
    a, b = sorted((_number(rng), _number(rng)), reverse=True)
    return _done([f"{a} - {b} = {a - b}."], a - b, f"What is {a}-{b}?", "subtract", difference_key(a, b))


def multiply(rng: random.Random) -> Problem:
    a, b = rng.randint(2, 25), rng.randint(2, 9)
    return _done([f"{a} * {b} = {a * b}."], a * b, f"What is {a}*{b}?", "multiply")


def word_add(rng: random.Random) -> Problem:
    name, item, a, b = rng.choice(NAMES), rng.choice(ITEMS), _number(rng, 1), _number(rng, 1)
    q = f"{name} has {a} {item} and gets {b} more. How many {item} does {name} have now?"
    return _done([f"{a} + {b} = {a + b}."], a + b, q, "word_add", sum_key(a, b))


def word_subtract(rng: random.Random) -> Problem:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    a, b = sorted((_number(rng, 1), _number(rng, 1)), reverse=True)
    q = f"{name} has {a} {item} and gives away {b}. How many {item} are left?"
    return _done([f"{a} - {b} = {a - b}."], a - b, q, "word_subtract", difference_key(a, b))


def word_multiply(rng: random.Random) -> Problem:
    name, item, a, b = rng.choice(NAMES), rng.choice(ITEMS), rng.randint(2, 9), rng.randint(2, 25)
    q = f"{name} buys {a} boxes with {b} {item} in each box. How many {item} is that?"
    return _done([f"{a} * {b} = {a * b}."], a * b, q, "word_multiply")


def sum_chain(rng: random.Random) -> Problem:
    terms = [_number(rng) for _ in range(3)]
    return _chain(terms, f"What is {'+'.join(map(str, terms))}?", "sum_chain")


def list_sum(rng: random.Random) -> Problem:
    terms = [_number(rng) for _ in range(rng.randint(2, 3))]
    return _chain(terms, f"What is the sum of {', '.join(map(str, terms))}?", "list_sum")


def _chain(terms: list[int], question: str, task: str) -> Problem:
    steps, total = [], terms[0]
    for term in terms[1:]:
        steps.append(f"{total} + {term} = {total + term}.")
        total += term
    return _done(steps, total, question, task)


def multiply_add(rng: random.Random) -> Problem:
    a, b, c = rng.randint(2, 12), rng.randint(2, 9), _number(rng)
    steps = [f"{a} * {b} = {a * b}.", f"{a * b} + {c} = {a * b + c}."]
    return _done(steps, a * b + c, f"What is {a}*{b}+{c}?", "multiply_add")


def list_extreme(rng: random.Random) -> Problem:
    numbers = rng.sample(range(100), rng.randint(3, 5))
    largest = rng.random() < 0.5
    word, value = ("largest", max(numbers)) if largest else ("smallest", min(numbers))
    q = f"What is the {word} number in {', '.join(map(str, numbers))}?"
    return _done([f"The {word} number is {value}."], value, q, "list_extreme")


def list_count(rng: random.Random) -> Problem:
    numbers = [_number(rng) for _ in range(rng.randint(2, 9))]
    q = f"How many numbers are in the list {', '.join(map(str, numbers))}?"
    return _done([f"The list has {len(numbers)} numbers."], len(numbers), q, "list_count")


def letter_count(rng: random.Random) -> Problem:
    letters = rng.sample("abcdefgh", 3)
    word = "".join(rng.choice(letters) for _ in range(rng.randint(3, 6)))
    letter = rng.choice(letters)
    n = word.count(letter)
    q = f"How many times does the letter {letter} appear in {word}?"
    return _done([f"In {word} the letter {letter} appears {n} times."], n, q, "letter_count")


TASKS = {f.__name__: f for f in (add, subtract, multiply, word_add, word_subtract, word_multiply,
                                  sum_chain, list_sum, multiply_add, list_extreme, list_count, letter_count)}


def split_of(key: str) -> str:
    """'eval' for one key in HELDOUT_MODULUS (by a stable hash), else 'train'."""
    digest = hashlib.sha1(key.encode()).digest()
    return "eval" if int.from_bytes(digest[:4], "big") % HELDOUT_MODULUS == 0 else "train"


def problems(count: int, seed: int, split: str) -> list[Problem]:
    """`count` problems of `split`, tasks drawn uniformly, deterministic for a seed. The
    held-out ones are all distinct so an accuracy counts `count` different questions (a task
    whose few held-out questions are used up, like the times table, then yields to others)."""
    if split not in SPLITS:
        raise ValueError(f"split: {split!r} is not one of {SPLITS}")
    rng = random.Random(f"{split}-{seed}")
    makers = list(TASKS.values())
    out: list[Problem] = []
    seen: set[str] = set()
    while len(out) < count:
        problem = rng.choice(makers)(rng)
        if split_of(problem.split_key) != split or (split == "eval" and problem.question in seen):
            continue
        seen.add(problem.question)
        out.append(problem)
    return out
