"""No momentum state falls into subnormal floats (docs/equations.md, section 8: small beta in Adam), in any path."""

import pytest
import torch
from states import momentum_of

import momentumrnn as mr
from momentumrnn.recurrence import DriveSpec, fused_recurrence

TINY = torch.finfo(torch.float32).tiny


def no_subnormals(t):
    nz = t[t != 0].abs()
    return bool((nz >= TINY).all())


@pytest.mark.parametrize("kind", ["adam", "rmsprop"])
def test_fused_drive_states_are_flushed(kind):
    # A pulse, then zero input and zero biases: the exact states decay like beta^t and mu^t,
    # far below the normal range; the carried states are flushed to exactly zero instead.
    torch.manual_seed(0)
    B, I, H = 3, 2, 4
    w_ih, w_hh = torch.randn(4 * H, I), torch.randn(4 * H, H) * 0.1
    spec = DriveSpec(kind, mu=0.6 if kind == "adam" else 0.0, epsilon=0.6, beta=0.1)
    for T, expect_zero in ((3, False), (400, True)):
        x = torch.zeros(T, B, I)
        x[0] = 1.0
        _, _, _, v, m = fused_recurrence(
            "lstm",
            torch.zeros(B, H),
            w_hh,
            spec=spec,
            x=x,
            w_ih=w_ih,
            b_ih=torch.zeros(4 * H),
            bias_e=torch.zeros(4 * H),
            c0=torch.zeros(B, H),
        )
        for state in (v, m):
            if state is not None:
                assert no_subnormals(state)
                assert bool((state == 0).all()) == expect_zero


@pytest.mark.parametrize("name", ["MomentumLSTM", "RestartMomentumLSTM", "AdamLSTM", "RMSPropLSTM"])
def test_layer_momentum_state_stays_normal(name):
    layer = mr.layer_class(name)(1, 8, init="authors", forget_bias=0.0, carry_momentum=True)  # zero biases
    x = torch.zeros(600, 2, 1)
    x[:5] = 1.0
    _, state = layer(x)
    floating = [t for t in momentum_of(layer, state).values() if t.is_floating_point()]
    assert len(floating) == (2 if name == "AdamLSTM" else 1)
    for t in floating:
        assert no_subnormals(t)
