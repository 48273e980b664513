import numpy as np
import pytest

from lstm_service.model.data import DataError, batchify, chunks, decode, encode, load_split


def test_bytes_round_trip_any_language():
    text = "ROMEO: ¿Qué? 日本語 🙂"
    ids = encode(text)
    assert all(0 <= i < 256 for i in ids)
    assert decode(ids) == text


def test_split_keeps_the_last_tenth_for_validation(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes(bytes(range(100)) * 10)
    split = load_split(path)
    assert split.train.size == 900 and split.validation.size == 100
    assert split.validation.tolist() == list(range(100))


@pytest.mark.parametrize("content", [None, b"", b"short"])
def test_unusable_text_is_a_clear_error(tmp_path, content):
    path = tmp_path / "t.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError):
        load_split(path)


def test_batchify_and_chunks_shift_targets_by_one():
    rows = batchify(np.arange(50, dtype=np.uint8), 4)
    assert rows.shape == (4, 12)
    windows = list(chunks(rows, 5))
    assert [w[0].shape[1] for w in windows] == [5, 5, 1]
    for inputs, targets in windows:
        assert (targets == inputs + 1).all()
    with pytest.raises(DataError):
        batchify(np.arange(5, dtype=np.uint8), 4)
