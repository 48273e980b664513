"""The vocabulary interface (service/core/vocab.py) for every kind: text -> ids, ids -> candidate
texts, and incremental decoding whose pieces join into the whole text."""
from __future__ import annotations

import random

import pytest

from lstm_service.service.api.errors import InvalidArgument
from lstm_service.service.core.vocab import BytesVocab
from lstm_service.service.core.vocab_tokenizer import TokenizerVocab
from lstm_service.service.core.vocab_words import WordsVocab
import own_models

TEXT = ("the clouds are in the sky. Les nuages sont dans le ciel, l'été. "
        "雲は空にある。 Ünïcödé wörds and emoji 🌧️ too.\n") * 4


def bpe_tokenizer(vocab_size: int = 320):
    return own_models.bpe_tokenizer(TEXT, vocab_size)


def decode_all(vocab, ids):
    decoder = vocab.decoder()
    return [decoder.feed(i) for i in ids] + [decoder.flush()]


def test_bytes_text_round_trip_and_pieces():
    vocab = BytesVocab()
    ids = vocab.encode([], "été", 100)
    assert bytes(ids.tolist()) == "été".encode()
    assert "".join(decode_all(vocab, ids.tolist())) == "été"
    assert vocab.texts[ord("a")] == "a" and vocab.texts[0xC3] == ""


def test_words_split_unk_eos_and_decoding():
    vocab = WordsVocab(["<unk>", "<eos>", "the", "clouds", "are", "in", ",", "sky"], unk="<unk>", eos="<eos>",
                       lowercase=True, split="punctuation")
    ids = vocab.encode([], "The clouds, are\nin the moon", 100).tolist()
    assert ids == [2, 3, 6, 4, 1, 5, 2, 0]
    assert vocab.texts[3] == "clouds" and vocab.texts[1] == "\n"
    assert "".join(decode_all(vocab, [2, 3, 6, 4, 1, 5, 2, 7])) == " the clouds, are\nin the sky"


def test_words_after_a_prompt_that_ends_a_line_start_without_a_space():
    vocab = WordsVocab(["<eos>", "the", "sky"], eos="<eos>")
    after_line = vocab.decoder(after=vocab.encode([], "the sky\n", 10).tolist()[-1])
    assert [after_line.feed(i) for i in (1, 2, 0, 1)] == ["the", " sky", "\n", "the"]
    after_word = vocab.decoder(after=2)
    assert [after_word.feed(i) for i in (1, 2)] == [" the", " sky"]


def test_words_without_unk_refuses_an_unknown_word_in_one_line():
    vocab = WordsVocab(["the", "sky"])
    with pytest.raises(InvalidArgument) as err:
        vocab.encode([], "the moon", 100)
    assert "'moon' is not in this model's vocabulary of 2 words" in str(err.value)
    assert "\n" not in str(err.value)


def test_tokenizer_encodes_like_the_library_and_streams_its_decode():
    tokenizer = bpe_tokenizer()
    vocab = TokenizerVocab(tokenizer)
    assert vocab.size == tokenizer.get_vocab_size()
    text = "the clouds are in the 雲 🌧️"
    assert vocab.encode([], text, 100).tolist() == tokenizer.encode(text, add_special_tokens=False).ids
    rng = random.Random(3)
    for _ in range(30):  # random ids: pieces that split characters, special tokens, invalid UTF-8
        ids = [rng.randrange(vocab.size) for _ in range(rng.randrange(1, 40))]
        pieces = decode_all(vocab, ids)
        assert "".join(pieces) == tokenizer.decode(ids)
    ids = tokenizer.encode("雲は空にある").ids  # real text: no piece ever ends mid-character
    pieces = decode_all(vocab, ids)
    assert "".join(pieces) == "雲は空にある" and not any("\ufffd" in p for p in pieces)
    # byte-level pieces are the bytes the token stands for
    assert b"".join(vocab.pieces[i] for i in ids) == "雲は空にある".encode()


def trained(kind: str):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    if kind == "wordpiece":
        tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tokenizer.normalizer = normalizers.BertNormalizer()
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=300, special_tokens=["[UNK]", "[SEP]"])
    else:
        tokenizer = Tokenizer(models.Unigram())
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
        tokenizer.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(vocab_size=120, special_tokens=["<unk>"], unk_token="<unk>")
    tokenizer.train_from_iterator(TEXT.splitlines(), trainer)
    return tokenizer


@pytest.mark.parametrize("kind", ["wordpiece", "unigram"])
def test_wordpiece_and_unigram_stream_the_tokenizers_decode(kind):
    tokenizer = trained(kind)
    vocab = TokenizerVocab(tokenizer)
    text = "the clouds are in the sky, l'été"
    ids = vocab.encode([], text, 100).tolist()
    assert ids == tokenizer.encode(text, add_special_tokens=False).ids
    assert "".join(decode_all(vocab, ids)) == tokenizer.decode(ids)
    rng = random.Random(5)
    for _ in range(30):
        ids = [rng.randrange(vocab.size) for _ in range(rng.randrange(1, 30))]
        assert "".join(decode_all(vocab, ids)) == tokenizer.decode(ids)
