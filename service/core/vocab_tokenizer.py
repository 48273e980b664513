"""A subword vocabulary from a Hugging Face ``tokenizer.json`` (model.json ``vocab.kind:
tokenizer``), loaded with the ``tokenizers`` library: BPE, WordPiece, Unigram.

Text is encoded without the tokenizer's added special tokens (no [CLS]/[SEP] or BOS:
the session's state is the context). Generated ids are decoded incrementally the
way text-generation-inference does: decode a short window of recent ids and emit
only what it added to the window before, and hold back text that ends in an
incomplete character (U+FFFD) until the next id completes it. The window starts
where the previous piece ended cleanly, so the pieces joined are exactly
``tokenizer.decode(ids)`` (the library's default: special tokens skipped), with no
broken UTF-8 and no doubled or missing spaces between pieces.
"""
from __future__ import annotations

from typing import Dict, List, Optional

from .vocab import TextDecoder, Vocab

REPLACEMENT = "\ufffd"


def _byte_level_table() -> Dict[str, int]:
    """GPT-2's byte <-> printable character table (what ByteLevel pre-tokenizers write), reversed."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


class TokenizerVocab(Vocab):
    kind = "tokenizer"

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.size = tokenizer.get_vocab_size(with_added_tokens=True)
        texts = tokenizer.decode_batch([[i] for i in range(self.size)], skip_special_tokens=False)
        # A token that is part of a longer character decodes to U+FFFD alone: it has no text by itself.
        self.texts = ["" if REPLACEMENT in t else t for t in texts]
        self.pieces = self._pieces()

    def _pieces(self) -> List[bytes]:
        """The bytes each token stands for: exact for byte-level BPE; the token's text otherwise."""
        pieces = [t.encode("utf-8") for t in self.texts]
        if type(self.tokenizer.decoder).__name__ != "ByteLevel":
            return pieces
        table = _byte_level_table()
        for i in range(self.size):
            token = self.tokenizer.id_to_token(i) or ""
            if token and all(ch in table for ch in token):
                pieces[i] = bytes(table[ch] for ch in token)
        return pieces

    @classmethod
    def from_card(cls, card) -> "TokenizerVocab":
        from tokenizers import Tokenizer

        vocab = cls(Tokenizer.from_file(str(card.verify_vocab())))
        if vocab.size != card.vocab_size:
            raise ValueError(f"{card.vocab['file']} has {vocab.size} tokens, model.json says {card.vocab_size}")
        return vocab

    def ids_of_text(self, text: str, what: str) -> List[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decoder(self, after: Optional[int] = None) -> TextDecoder:
        # Decoded alone, not after the prompt: the pieces are then exactly tokenizer.decode(generated ids).
        return _IncrementalDecoder(self.tokenizer)


class _IncrementalDecoder(TextDecoder):
    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.ids: List[int] = []
        self.prefix = 0  # the window starts here: the previous piece's start, a clean boundary
        self.read = 0  # ids before this have been emitted

    def _pending(self) -> str:
        before = self.tokenizer.decode(self.ids[self.prefix:self.read])
        after = self.tokenizer.decode(self.ids[self.prefix:])
        return after[len(before):] if len(after) > len(before) else ""

    def feed(self, token: int) -> str:
        self.ids.append(token)
        text = self._pending()
        if not text or text.endswith(REPLACEMENT):
            return ""  # nothing new yet, or a character still incomplete
        self.prefix, self.read = self.read, len(self.ids)
        return text

    def flush(self) -> str:
        text = self._pending()
        self.prefix = self.read = len(self.ids)
        return text
