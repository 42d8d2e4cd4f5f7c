"""PTB-style normalisation shared by training and simulation."""

from __future__ import annotations

from eventsim.text import EOS, UNK, build_vocabulary, encode, tokenize


def test_news_text_is_normalised_like_ptb():
    text = "The Senate voted 50-50, and Pence's vote didn't matter. It cost $1,000.5 or 24-hour <unk> things!"
    assert tokenize(text) == [
        "the", "senate", "voted", "N-N", "and", "pence", "'s", "vote", "did", "n't", "matter", EOS,
        "it", "cost", "$", "N", "or", "N-hour", UNK, "things", EOS,
    ]


def test_ptb_lines_pass_through():
    line = "the N stocks rose N % in <unk> trading"
    assert tokenize(line + "\n" + line) == (line.split() + [EOS]) * 2


def test_vocabulary_and_encoding():
    vocab = build_vocabulary(["b", "a", "b", "c", "c", "c", UNK, EOS], size=4)
    assert vocab == [UNK, EOS, "c", "b"]  # most frequent first, ties alphabetical, cut at size
    assert encode(["c", "a", EOS], vocab) == [2, 0, 1]


def test_empty_and_punctuation_only_text():
    assert tokenize("") == []
    assert tokenize("  ... !!  \n ? ") == []
