"""The hand-written cells follow the seeds' equations and agree with torch's fast path."""
import pytest
import torch

from lstm_service.model.cells import CoupledLSTMCell, LSTMCell, PeepholeLSTMCell
from lstm_service.model.config import ModelConfig
from lstm_service.model.lm import LanguageModel
from lstm_service.model.recurrent import FastStack, HandWrittenStack, copy_fast_to_hand_written


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_hand_written_stack_matches_fast_path(cell):
    torch.manual_seed(1)
    config = ModelConfig(cell=cell, embed_size=12, hidden_size=20, layers=3)
    fast, hand = FastStack(config), HandWrittenStack(config)
    copy_fast_to_hand_written(fast, hand)
    x = torch.randn(4, 9, 12)
    h, c = torch.randn(3, 4, 20), torch.randn(3, 4, 20)
    with torch.no_grad():
        for expected, got in zip(fast(x, h, c), hand(x, h, c)):
            assert (expected - got).abs().max().item() <= 1e-5


def test_lstm_cell_is_the_seed_equations():
    torch.manual_seed(2)
    cell = LSTMCell(5, 7)
    x, h, c = torch.randn(3, 5), torch.randn(3, 7), torch.randn(3, 7)
    W, U, b = cell.weight_ih, cell.weight_hh, cell.bias_ih + cell.bias_hh
    pre = x @ W.T + h @ U.T + b
    i, f, g, o = (pre[:, k * 7 : (k + 1) * 7] for k in range(4))
    c_expected = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h_expected = torch.sigmoid(o) * torch.tanh(c_expected)
    h_got, c_got = cell(x, h, c)
    assert torch.allclose(c_got, c_expected, atol=1e-6)
    assert torch.allclose(h_got, h_expected, atol=1e-6)


def test_peephole_gates_look_at_the_cell_state():
    torch.manual_seed(3)
    plain, peephole = LSTMCell(4, 6), PeepholeLSTMCell(4, 6)
    peephole.load_state_dict({**plain.state_dict(), **{k: v for k, v in peephole.state_dict().items()
                                                       if k.startswith("peephole")}})
    x, h, c = torch.randn(2, 4), torch.randn(2, 6), torch.randn(2, 6)
    # Zero peepholes: exactly the classic LSTM.
    for a, b in zip(plain(x, h, c), peephole(x, h, c)):
        assert torch.allclose(a, b, atol=1e-6)
    # Peepholes on: f and i see C_{t-1}, o sees C_t.
    with torch.no_grad():
        for p in (peephole.peephole_i, peephole.peephole_f, peephole.peephole_o):
            p.normal_()
    pre = x @ peephole.weight_ih.T + h @ peephole.weight_hh.T + peephole.bias_ih + peephole.bias_hh
    i, f, g, o = pre.chunk(4, 1)
    c_new = torch.sigmoid(f + peephole.peephole_f * c) * c + torch.sigmoid(i + peephole.peephole_i * c) * torch.tanh(g)
    h_new = torch.sigmoid(o + peephole.peephole_o * c_new) * torch.tanh(c_new)
    h_got, c_got = peephole(x, h, c)
    assert torch.allclose(c_got, c_new, atol=1e-6) and torch.allclose(h_got, h_new, atol=1e-6)


def test_coupled_cell_writes_one_minus_forget():
    torch.manual_seed(4)
    cell = CoupledLSTMCell(3, 5)
    x, h, c = torch.randn(2, 3), torch.randn(2, 5), torch.randn(2, 5)
    f, g, o = (x @ cell.weight_ih.T + h @ cell.weight_hh.T + cell.bias_ih + cell.bias_hh).chunk(3, 1)
    forget = torch.sigmoid(f)
    c_expected = forget * c + (1 - forget) * torch.tanh(g)
    h_got, c_got = cell(x, h, c)
    assert torch.allclose(c_got, c_expected, atol=1e-6)
    assert torch.allclose(h_got, torch.sigmoid(o) * torch.tanh(c_expected), atol=1e-6)


def _recurrent_parameters(cell: str, fast: bool) -> int:
    model = LanguageModel(ModelConfig(cell=cell, embed_size=64, hidden_size=128, layers=2), fast=fast)
    return sum(p.numel() for p in model.recurrent.parameters())


@pytest.mark.parametrize("fast", [True, False])
def test_parameter_counts_follow_the_gate_count(fast):
    rnn = _recurrent_parameters("rnn", fast)
    assert _recurrent_parameters("lstm", fast) == 4 * rnn
    assert _recurrent_parameters("gru", fast) == 3 * rnn
    # Coupled drops the input gate's weights: 3 affine maps instead of 4.
    assert _recurrent_parameters("coupled", fast) == 3 * rnn


def test_every_cell_kind_runs_in_the_language_model():
    for cell in ("lstm", "peephole", "coupled", "gru", "rnn"):
        model = LanguageModel(ModelConfig(cell=cell, embed_size=8, hidden_size=16, layers=2))
        h, c = model.initial_state(3)
        logits, h2, c2 = model(torch.randint(0, 256, (3, 5)), h, c)
        assert logits.shape == (3, 5, 256) and h2.shape == (2, 3, 16) and c2.shape == (2, 3, 16)
