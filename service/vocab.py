"""Tokens <-> bytes/text for the model's vocabulary (today: "bytes", one token per UTF-8 byte)."""
from __future__ import annotations

import codecs
from typing import Optional, Sequence

import numpy as np

from .errors import InvalidArgument


class Vocab:
    def __init__(self, kind: str, size: int) -> None:
        self.kind = kind
        self.size = size
        self.is_bytes = kind == "bytes"
        # piece: the byte a token stands for; text: that byte as text when it is
        # a whole character alone (ASCII), else "" (part of a longer character).
        self.pieces = [bytes([i]) if self.is_bytes and i < 256 else b"" for i in range(size)]
        self.texts = [chr(i) if self.is_bytes and i < 128 else "" for i in range(size)]

    def encode(self, tokens: Sequence[int], text: str, max_tokens: int, what: str = "input") -> np.ndarray:
        """Validated token ids [T] int64 from either a list of ids or text."""
        if len(tokens) == 1 and not text and 0 <= tokens[0] < self.size:  # the common single-token step
            return np.array([tokens[0]], dtype=np.int64)
        if len(tokens) and text:
            raise InvalidArgument(f"{what}: set either tokens or text, not both", field=what)
        if text:
            if not self.is_bytes:
                raise InvalidArgument(f"{what}: text input needs a bytes vocabulary; this model's is {self.kind!r}",
                                      field=f"{what}.text")
            ids = np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)
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

    def decoder(self) -> "TextDecoder":
        return TextDecoder(self)


class TextDecoder:
    """Turns a stream of byte tokens into text, emitting each character once complete."""

    def __init__(self, vocab: Vocab) -> None:
        self.vocab = vocab
        self._utf8: Optional[codecs.IncrementalDecoder] = (
            codecs.getincrementaldecoder("utf-8")(errors="replace") if vocab.is_bytes else None
        )

    def feed(self, token: int, final: bool = False) -> str:
        if self._utf8 is None:
            return ""
        return self._utf8.decode(self.vocab.pieces[token], final=final)
