"""Profanity handling (``profanity=masked|removed|raw``).

Vosk models carry no profanity list, so this is approximate: words on a small
built-in list (matched case-insensitively, whole words) are masked with ``*``
or removed; everything else passes unchanged.
"""

from __future__ import annotations

import re

#: A deliberately small list; extend per deployment needs.
WORDS: frozenset[str] = frozenset(
    {
        "fuck", "fucking", "fucked", "shit", "bitch", "bastard", "asshole", "cunt", "dick",
        "씨발", "시발", "개새끼", "병신", "좆",
    }
)

_TOKEN = re.compile(r"\S+")


def is_profane(word: str) -> bool:
    return word.strip(".,!?;:\"'").lower() in WORDS


def filter_text(text: str, mode: str) -> str:
    """``text`` with listed words masked (``masked``), dropped (``removed``) or kept (``raw``)."""
    if mode == "raw" or not text:
        return text
    if mode == "removed":
        return " ".join(w for w in text.split() if not is_profane(w))
    return _TOKEN.sub(lambda m: "*" * len(m.group()) if is_profane(m.group()) else m.group(), text)
