"""A word vocabulary (model.json ``vocab.kind: words``): vocab.txt holds one token per
line, the token id is the line number (as pytorch/examples word_language_model's
``Dictionary`` numbers them).

Text is split into words on whitespace (``split: whitespace``) or into words and
punctuation marks (``split: punctuation``), lowercased first when ``lowercase`` is
set: the same rule the model's training text was prepared with. A newline is the
``eos`` token when the vocabulary has one (word_language_model appends ``<eos>`` to
every line); a word the vocabulary lacks is ``unk`` when it has one, else refused.
Generated words are joined with single spaces, ``eos`` as a newline, and in
``punctuation`` mode closing punctuation attaches to the word before it.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ..api.errors import InvalidArgument, quote
from .vocab import TextDecoder, Vocab

SPLITS = {
    "whitespace": re.compile(r"\S+"),
    # words (with inner apostrophes: "lord's") and single punctuation marks
    "punctuation": re.compile(r"\w+(?:'\w+)*|[^\w\s]"),
}
ATTACHED = frozenset(",.;:!?)]}")  # no space before these in punctuation mode


def split_words(line: str, split: str = "whitespace", lowercase: bool = False) -> List[str]:
    """The words of one line of text, as the vocabulary numbers them."""
    return SPLITS[split].findall(line.lower() if lowercase else line)


def read_vocab_file(path: Path) -> List[str]:
    """One token per line; refuses empty lines and tokens with whitespace (they could never be typed)."""
    words = path.read_text(encoding="utf-8").split("\n")
    if words and words[-1] == "":
        words.pop()
    for i, word in enumerate(words):
        if not word or word != word.strip() or len(word.split()) != 1:
            raise ValueError(f"{path}: line {i + 1} is {word!r}; each line must be one token without whitespace")
    if len(set(words)) != len(words):
        dup = next(w for i, w in enumerate(words) if w in words[:i])
        raise ValueError(f"{path}: token {dup!r} is on more than one line; each token must be on one line")
    return words


class WordsVocab(Vocab):
    kind = "words"

    def __init__(self, words: Sequence[str], unk: Optional[str] = None, eos: Optional[str] = None,
                 lowercase: bool = False, split: str = "whitespace") -> None:
        if split not in SPLITS:
            raise ValueError(f"vocab split {split!r} is not one of {', '.join(SPLITS)}")
        self.words = list(words)
        self.size = len(self.words)
        self.ids: Dict[str, int] = {w: i for i, w in enumerate(self.words)}
        for name, token in (("unk", unk), ("eos", eos)):
            if token is not None and token not in self.ids:
                raise ValueError(f"the vocabulary's {name} token {token!r} is not one of its words")
        self.unk = self.ids[unk] if unk is not None else None
        self.eos = self.ids[eos] if eos is not None else None
        self.lowercase, self.split = lowercase, split
        self.texts = ["\n" if i == self.eos else w for i, w in enumerate(self.words)]
        self.pieces = [t.encode("utf-8") for t in self.texts]

    @classmethod
    def from_card(cls, card) -> "WordsVocab":
        entry = card.vocab
        words = read_vocab_file(card.verify_vocab())
        if len(words) != card.vocab_size:
            raise ValueError(f"{entry['file']} has {len(words)} tokens, model.json says {card.vocab_size}")
        return cls(words, unk=entry.get("unk"), eos=entry.get("eos"), lowercase=bool(entry.get("lowercase")),
                   split=entry.get("split", "whitespace"))

    def ids_of_text(self, text: str, what: str) -> List[int]:
        lines = text.split("\n")
        ids: List[int] = []
        for n, line in enumerate(lines):
            for word in split_words(line, self.split, self.lowercase):
                token = self.ids.get(word, self.unk)
                if token is None:
                    raise InvalidArgument(
                        f"{what}.text: the word {quote(word)} is not in this model's vocabulary of {self.size} "
                        "words, which has no unknown-word token; use its words or send token ids",
                        field=f"{what}.text")
                ids.append(token)
            if n + 1 < len(lines) and self.eos is not None:
                ids.append(self.eos)
        return ids

    def decoder(self, after: Optional[int] = None) -> TextDecoder:
        return _WordsDecoder(self, line_start=after is not None and after == self.eos)


class _WordsDecoder(TextDecoder):
    """Generate always continues some text (a prompt or a session's), so the first word gets its
    space too, unless that text is known to end with a newline (the prompt's last token is eos)."""

    def __init__(self, vocab: WordsVocab, line_start: bool = False) -> None:
        self.vocab = vocab
        self.line_start = line_start

    def feed(self, token: int) -> str:
        text = self.vocab.texts[token]
        if token == self.vocab.eos:
            self.line_start = True
            return text
        glued = self.line_start or (self.vocab.split == "punctuation" and text in ATTACHED)
        self.line_start = False
        return text if glued else " " + text
