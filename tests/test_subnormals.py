"""No momentum state falls into subnormal floats (SPEC 5: small beta in Adam), in any path."""

import pytest
import torch

import momentumrnn as mr
from momentumrnn.recurrence import DriveSpec, fused_recurrence

TINY = torch.finfo(torch.float32).tiny


def subnormal_fraction(t):
    return float(((t != 0) & (t.abs() < TINY)).float().mean())


def no_subnormals(t):
    nz = t[t != 0].abs()
    return bool((nz >= TINY).all())


@pytest.mark.parametrize("kind", ["adam", "rmsprop"])
def test_fused_drive_states_stay_normal(kind):
    # A pulse, then 400 steps of zero input and zero biases: the exact states decay like
    # beta^t and mu^t, far below the normal range.
    torch.manual_seed(0)
    T, B, I, H = 400, 3, 2, 4
    x = torch.zeros(T, B, I)
    x[0] = 1.0
    w_ih, w_hh = torch.randn(4 * H, I), torch.randn(4 * H, H) * 0.1
    spec = DriveSpec(kind, mu=0.6 if kind == "adam" else 0.0, epsilon=0.6, beta=0.1)
    hs, cs, ps, vs, ms = fused_recurrence("lstm", torch.zeros(B, H), w_hh, spec=spec, x=x, w_ih=w_ih,
                                          b_ih=torch.zeros(4 * H), bias_e=torch.zeros(4 * H),
                                          c0=torch.zeros(B, H))
    # flushed every few steps: no state stays subnormal for long, none at the end
    assert subnormal_fraction(ms) < 0.05 and (ms[1] > 0).any() and (ms[-1] == 0).all()
    if vs is not None:
        assert subnormal_fraction(vs) < 0.05 and (vs[-1] == 0).all()
    # (h and c may decay into subnormals with zero drive, in torch.nn.LSTM too: not a momentum state)


@pytest.mark.parametrize("name", ["MomentumLSTM", "RestartMomentumLSTM", "AdamLSTM", "RMSPropLSTM"])
def test_layer_momentum_state_stays_normal(name):
    layer = mr.layer_class(name)(1, 8, init="authors", forget_bias=0.0)  # zero biases
    x = torch.zeros(600, 2, 1)
    x[:5] = 1.0
    _, state = layer(x)
    for t in state.momentum:
        if t is not None and t.is_floating_point():
            assert no_subnormals(t)
