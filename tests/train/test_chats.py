"""The conversations: deterministic per seed, held out by construction (no held-out problem in
any turn of a training conversation, no held-out phrasing in training), follow-ups that
build on the previous answer, and the messages a chat client sends."""

from __future__ import annotations

import pytest

from fastdllm_ray.eval import extract_answer
from fastdllm_ray.train import chats, data


def test_same_seed_same_conversations_other_seed_other_ones():
    assert chats.chats(200, 3, "train") == chats.chats(200, 3, "train")
    assert chats.chats(200, 3, "train") != chats.chats(200, 4, "train")


def test_no_held_out_problem_appears_in_any_turn_of_training():
    training = chats.chats(5000, 0, "train") + [chats.Chat((p,)) for p in data.problems(5000, 0, "train")]
    train_keys = {turn.split_key for chat in training for turn in chat.turns}
    held_out = chats.chats(300, 1234, "eval", turns=3)
    held_out_keys = {turn.split_key for chat in held_out for turn in chat.turns}
    assert all(data.split_of(k) == "train" for k in train_keys)
    assert all(data.split_of(k) == "eval" for k in held_out_keys)
    assert not train_keys & held_out_keys
    # the same sum in any order or wording is one problem
    assert data.add.__name__ and data.sum_key(7, 12) == data.sum_key(12, 7)


def test_held_out_phrasings_never_occur_in_training():
    for questions in (chats.ASK, chats.ADD, chats.SUBTRACT):
        train, held_out = set(chats.phrasings(questions, "train")), set(chats.phrasings(questions, "eval"))
        assert train and held_out and not train & held_out
        assert {q for _, q in train} == set(questions)  # every question's words are taught
    lead_ins = {lead for chat in chats.chats(3000, 0, "train") for lead in chats.HELD_OUT_LEAD_INS
                for turn in chat.turns if turn.question.startswith(lead)}
    assert not lead_ins


def test_the_issues_follow_ups_are_taught():
    for lead, question in (("And ", "what is {e}?"), ("Now ", "subtract {n}."), ("", "what about {e}?")):
        assert chats.phrasing_split(lead, question) == "train"
    texts = {turn.question.split(" ")[0] for chat in chats.chats(3000, 0, "train") for turn in chat.turns}
    assert {"And", "Now", "What"} <= texts


def test_follow_ups_build_on_the_previous_answer_and_every_answer_states_its_value():
    conversations = chats.chats(2000, 5, "train", turns=4)
    assert {len(c.turns) for c in conversations} == {4}
    builds_on = 0
    for chat in conversations:
        for previous, turn in zip(chat.turns, chat.turns[1:]):
            assert extract_answer(turn.answer) == turn.value and 0 <= turn.value <= 198
            if turn.task in ("chat_add_on", "chat_take_off"):
                assert turn.answer.startswith(f"{previous.value} ")
                builds_on += 1
    assert builds_on > 2000


def test_messages_hold_the_history_with_the_taught_or_the_models_own_answers():
    chat = chats.chats(1, 0, "eval", turns=3)[0]
    messages = chat.messages(2)
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[1]["content"] == chat.turns[0].answer and messages[2]["content"] == chat.turns[1].question
    assert chat.messages(3, answers=["mine", "also mine"])[3]["content"] == "also mine"
    assert chat.messages() == chat.messages(3)


def test_held_out_conversations_are_distinct_and_bad_arguments_are_refused_by_name():
    held_out = chats.chats(300, 1234, "eval", turns=3)
    assert len({tuple(t.question for t in c.turns) for c in held_out}) == 300
    with pytest.raises(ValueError, match="split"):
        chats.chats(1, 0, "test")
    with pytest.raises(ValueError, match="turns"):
        chats.chats(1, 0, "train", turns=(3, 2))
