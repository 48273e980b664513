"""Tokens <-> text for the model's vocabulary, behind one interface.

Every kind (model.json ``vocab.kind``) gives the same four things, so nothing
above this module asks which kind it serves:

- ``encode``: a request's tokens or text -> validated ids [T] int64;
- ``pieces`` / ``texts``: per token id, the bytes it stands for and its text
  when that text is whole characters by itself ("" for part of a character);
- ``decoder()``: an incremental decoder for generated tokens, which emits
  text only once it is whole (no broken UTF-8, no doubled spaces) and whose
  pieces, joined, are the text of all the ids fed to it;
- ``max_piece_bytes``: the longest piece or text, for the reply-size bound.

Kinds: ``bytes`` (here), ``words`` (service/core/vocab_words.py), ``tokenizer``
(a Hugging Face tokenizer.json, service/core/vocab_tokenizer.py).
"""
from __future__ import annotations

import codecs
from functools import cached_property
from typing import List, Optional, Sequence, Union

import numpy as np

from ..api.errors import InvalidArgument


class TextDecoder:
    """Generated token ids -> text, one piece per token (possibly "" while a character is incomplete)."""

    def feed(self, token: int) -> str:  # pragma: no cover - each kind has its own
        raise NotImplementedError

    def flush(self) -> str:
        """What is still held back (an incomplete character, as U+FFFD) once generation ends."""
        return ""


class Vocab:
    kind = "?"
    size: int
    pieces: List[bytes]
    texts: List[str]

    @cached_property  # read on every step's reply-size check: computed once
    def max_piece_bytes(self) -> int:
        return max((max(len(p), len(t.encode("utf-8"))) for p, t in zip(self.pieces, self.texts)), default=0)

    def ids_of_text(self, text: str, what: str) -> Union[Sequence[int], np.ndarray]:  # pragma: no cover
        raise NotImplementedError

    def decoder(self, after: Optional[int] = None) -> TextDecoder:  # pragma: no cover - each kind has its own
        """A decoder for tokens that follow token ``after`` (the prompt's last, when known)."""
        raise NotImplementedError

    def encode(self, tokens: Union[Sequence[int], np.ndarray], text: str, max_tokens: int,
               what: str = "input") -> np.ndarray:
        """Validated token ids [T] int64 from either a list of ids or text."""
        if len(tokens) == 1 and not text and 0 <= tokens[0] < self.size:  # the common single-token step
            return np.array([tokens[0]], dtype=np.int64)
        if len(tokens) and text:
            raise InvalidArgument(f"{what}: set either tokens or text, not both", field=what)
        if text:
            ids = np.asarray(self.ids_of_text(text, what), dtype=np.int64)
        else:
            ids = np.fromiter(tokens, dtype=np.int64, count=len(tokens))
        if ids.size == 0:
            raise InvalidArgument(f"{what} is empty: send 1 to {max_tokens} tokens (tokens or text)", field=what)
        if ids.size > max_tokens:
            raise InvalidArgument(
                f"{what} has {ids.size} tokens; allowed 1 to {max_tokens} per message (--max-tokens-per-message)",
                field=what,
            )
        bad = np.flatnonzero((ids < 0) | (ids >= self.size))
        if bad.size:
            i = int(bad[0])
            raise InvalidArgument(
                f"{what}: token id {int(ids[i])} at position {i} is outside the vocabulary; "
                f"allowed 0 to {self.size - 1}",
                field=f"{what}.tokens",
            )
        return ids


class BytesVocab(Vocab):
    """One token per UTF-8 byte (ids 0-255; a larger head's extra ids have no text)."""

    kind = "bytes"

    def __init__(self, size: int = 256) -> None:
        self.size = size
        # piece: the byte a token stands for; text: that byte as text when it is
        # a whole character alone (ASCII), else "" (part of a longer character).
        self.pieces = [bytes([i]) if i < 256 else b"" for i in range(size)]
        self.texts = [chr(i) if i < 128 else "" for i in range(size)]

    def ids_of_text(self, text: str, what: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8)

    def decoder(self, after: Optional[int] = None) -> TextDecoder:
        return _Utf8Decoder(self.pieces)


class _Utf8Decoder(TextDecoder):
    def __init__(self, pieces: List[bytes]) -> None:
        self.pieces = pieces
        self.utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, token: int) -> str:
        return self.utf8.decode(self.pieces[token])

    def flush(self) -> str:
        return self.utf8.decode(b"", final=True)


def served_vocab(card) -> Vocab:
    """``load_vocab``, failing as a ConfigError (one line, exit 2) when the vocabulary cannot be loaded."""
    from lstm_service.model.card import ModelCardError

    from ..api.errors import ConfigError

    try:
        return load_vocab(card)
    except (ModelCardError, OSError, ValueError) as exc:  # a missing, changed or malformed vocabulary file
        raise ConfigError(f"model {card.name!r}: its vocabulary cannot be loaded: {exc}") from exc


def load_vocab(card) -> Vocab:
    """The vocabulary a model card describes (its file checked against the card's sha256)."""
    kind = card.vocab_kind
    if kind == "bytes":
        return BytesVocab(card.vocab_size)
    if kind == "words":
        from .vocab_words import WordsVocab

        return WordsVocab.from_card(card)
    if kind == "tokenizer":
        from .vocab_tokenizer import TokenizerVocab

        return TokenizerVocab.from_card(card)
    raise ValueError(f"model {card.name!r}: vocabulary kind {kind!r} is not one of bytes, words, tokenizer")
