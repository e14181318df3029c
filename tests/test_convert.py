"""convert / revert (src/momentumrnn/convert.py): every torch.nn RNN / LSTM / GRU of a model to
momentum layers with the same configuration and weights, and back."""

import pytest
import torch
from torch import nn

import momentumrnn as mr


class Tagger(nn.Module):
    """A model written for torch.nn: an embedding, a stacked bidirectional LSTM, a GRU over a
    list of heads, a frozen RNN."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 3)
        self.lstm = nn.LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True, dropout=0.2)
        self.blocks = nn.ModuleList([nn.GRU(8, 5, batch_first=True), nn.Sequential(nn.RNN(5, 2, nonlinearity="relu"))])
        self.out = nn.Linear(2, 3)

    def forward(self, tokens):
        x, (h, _c) = self.lstm(self.emb(tokens))
        x, h = self.blocks[0](x)
        x, h = self.blocks[1][0](x.transpose(0, 1))
        return self.out(x[-1]), h


def tokens():
    return torch.randint(0, 10, (3, 6), generator=torch.Generator().manual_seed(0))


def test_convert_replaces_every_layer_with_its_weights():
    torch.manual_seed(0)
    model = Tagger().double().eval()
    model.blocks[0].weight_hh_l0.requires_grad_(False)
    want = model(tokens())
    converted = mr.convert(model, "heavy_ball", mu=0.0, epsilon=1.0)
    assert converted is model
    assert isinstance(model.lstm, mr.MomentumLSTM) and isinstance(model.blocks[0], mr.MomentumGRU)
    assert isinstance(model.blocks[1][0], mr.MomentumRNN) and model.blocks[1][0].nonlinearity == "relu"
    assert model.lstm.num_layers == 2 and model.lstm.bidirectional and model.lstm.batch_first
    assert model.lstm.dropout == 0.2 and not model.training
    assert model.lstm.weight_ih_l0.dtype == torch.float64
    assert not model.blocks[0].weight_hh_l0.requires_grad and model.blocks[0].weight_ih_l0.requires_grad
    got = model(tokens())  # mu = 0, epsilon = 1: the plain cells, torch.nn's numbers
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


def test_the_models_training_loop_runs_unchanged():
    torch.manual_seed(0)
    model = mr.convert(Tagger(), "adam", beta=0.5)
    assert isinstance(model.lstm, mr.AdamLSTM) and model.lstm.scheme.beta == 0.5
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):
        logits, h = model(tokens())
        loss = logits.logsumexp(1).mean() + h.pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(p.grad is not None for p in model.parameters())


def test_revert_gives_torch_nn_back():
    torch.manual_seed(0)
    model = Tagger().eval()
    want = model(tokens())
    mr.convert(model, "none")
    assert isinstance(model.lstm, mr.LSTM)
    mr.revert(model)
    assert type(model.lstm) is nn.LSTM and type(model.blocks[0]) is nn.GRU and type(model.blocks[1][0]) is nn.RNN
    for a, b in zip(model(tokens()), want):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_top_level_layer_and_clear_errors():
    layer = mr.convert(nn.GRU(2, 3), "rmsprop")
    assert isinstance(layer, mr.RMSPropGRU)
    with pytest.raises(ValueError, match=r"cannot revert the model \(RMSPropGRU\).*strict=False"):
        mr.revert(layer)
    assert type(mr.revert(layer, strict=False)) is nn.GRU

    class MyLSTM(nn.LSTM):
        def forward(self, x, hx=None):
            return super().forward(2 * x, hx)

    model = nn.Sequential(nn.Linear(2, 2), MyLSTM(2, 3))
    with pytest.raises(TypeError, match=r"cannot convert 1: MyLSTM subclasses torch.nn.LSTM"):
        mr.convert(model, "heavy_ball")
    with pytest.raises(ValueError, match=r"cannot convert the model \(GRU\(2, 3\)\): .*unknown momentum scheme"):
        mr.convert(nn.GRU(2, 3), "heavy-bal")
    with pytest.raises(ValueError, match=r"scheme 'rmsprop' has no hyper-parameter 'mu'"):
        mr.convert(nn.GRU(2, 3), "rmsprop", mu=0.5)
