"""`lstm-client explain "TEXT" --out gates.png` against a real server: the PNG is
rendered and non-empty for every cell family, and the unit matching behind
the lower rows finds what is there."""
import asyncio
import struct

import numpy as np
import pytest

pytest.importorskip("matplotlib", reason="the explain picture needs matplotlib (lstm-client[plot])")

from lstm_client import cli  # noqa: E402
from lstm_client.explain_plot import best_unit, text_properties  # noqa: E402
from svc_helpers import serving  # noqa: E402

TEXT = 'KING:\nHe said "be merry", and so\nwe are.\n'


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])  # IHDR width, height


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
async def test_explain_command_writes_a_png(make_tiny_model, tmp_path, capsys, cell):
    out = tmp_path / "gates.png"
    async with serving(make_tiny_model(cell)) as s:
        argv = ["--target", s.target, "explain", TEXT, "--out", str(out), "--units", "8"]
        code = await asyncio.to_thread(cli.main, argv)
    assert code == 0, capsys.readouterr().err
    width, height = png_size(out)
    assert width >= 1000 and height >= 300
    assert out.stat().st_size > 20_000  # heat maps and text, not a blank canvas
    assert f"{len(TEXT)} tokens" in capsys.readouterr().out


async def test_bad_layer_is_one_line_and_exit_2(tiny_model_dir, tmp_path, capsys):
    async with serving(tiny_model_dir) as s:
        argv = ["--target", s.target, "explain", "abc", "--out", str(tmp_path / "x.png"), "--layer", "9"]
        code = await asyncio.to_thread(cli.main, argv)
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "0 to 1" in err
    assert not (tmp_path / "x.png").exists()


def test_text_properties_per_byte():
    props = text_properties('a"b"\ncé')
    assert props["inside quotes"] == [0, 1, 1, 1, 0, 0, 0, 0]  # é is two bytes
    assert props["position in line"] == [0, 1, 2, 3, 4, 0, 1, 1]
    assert props["after a newline"] == [0, 0, 0, 0, 0, 1, 0, 0]


def test_best_unit_finds_the_planted_unit():
    rng = np.random.default_rng(0)
    prop = rng.integers(0, 2, size=200).astype(float)
    values = rng.normal(size=(200, 64))
    values[:, 37] = -2 * prop + rng.normal(0, 0.1, size=200)
    unit, r = best_unit(values, prop)
    assert unit == 37 and r < -0.9
    assert best_unit(values, np.ones(200)) is None
