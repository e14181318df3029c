"""The causal filters: exact against a loop, O(T) memory, and no subnormal floats."""

import pytest
import torch

from momentumrnn.filters import cumulative_decay, linear_filter


def loop(x, a, y0=None):
    y = torch.zeros_like(x[0]) if y0 is None else y0
    out = []
    for t in range(x.shape[0]):
        y = (a if a.dim() == 0 else a[t]) * y + x[t]
        out.append(y)
    return torch.stack(out)


@pytest.mark.parametrize("T", [1, 2, 15, 16, 17, 64, 65, 130, 1000])
def test_filter_matches_loop(T):
    g = torch.Generator().manual_seed(T)
    x = torch.randn(T, 3, 2, generator=g, dtype=torch.float64)
    y0 = torch.randn(3, 2, generator=g, dtype=torch.float64)
    for a in (
        torch.tensor(0.6, dtype=torch.float64),
        torch.tensor(0.0, dtype=torch.float64),
        torch.rand(T, 3, 1, generator=g, dtype=torch.float64),
        torch.rand(T, 1, 1, generator=g, dtype=torch.float64),
    ):
        torch.testing.assert_close(linear_filter(x, a, y0), loop(x, a, y0), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(linear_filter(x, a), loop(x, a), rtol=1e-12, atol=1e-12)
    pi = cumulative_decay(torch.tensor(0.5, dtype=torch.float64), T)
    torch.testing.assert_close(pi.flatten(), 0.5 ** torch.arange(1, T + 1, dtype=torch.float64))


def test_no_subnormals_after_long_zero_input():
    # A pulse followed by zeros: the exact filter decays as beta^t, deep into the subnormal range.
    tiny = torch.finfo(torch.float32).tiny
    for beta in (0.1, 0.6, 0.9):
        x = torch.zeros(3000, 4, 8)
        x[0] = 1.0
        y = linear_filter(x, torch.tensor(beta))
        nonzero = y[y != 0].abs()
        assert nonzero.numel() > 0 and bool((nonzero >= tiny).all()), beta
        # where the exact value is normal, the result is exact to float rounding
        t = torch.arange(3000, dtype=torch.float64)
        exact = beta**t
        normal = exact >= 1e-30
        torch.testing.assert_close(y[normal, 0, 0].double(), exact[normal], rtol=1e-4, atol=0)


def test_gradient_through_learnable_coefficient():
    x = torch.randn(20, 2, 1, dtype=torch.float64)
    a = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    y0 = torch.randn(2, 1, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, y0: linear_filter(x, a, y0), (a, y0))


def test_memory_is_linear_in_T():
    # No T x T matrix: a 200k-step filter of a few features must be cheap.
    x = torch.randn(200_000, 2, 1)
    y = linear_filter(x, torch.tensor(0.9))
    assert y.shape == x.shape and torch.isfinite(y).all()


# the triangular solve (one block; a short sequence of few features) and several blocks
@pytest.mark.parametrize("T", [40, 100, 300])
def test_nan_only_propagates_forward(T):
    x = torch.randn(T, 2, 3)
    x[37, 0, 1] = float("nan")
    for a in (torch.tensor(0.5), torch.rand(T, 2, 1), torch.rand(T, 1, 1)):
        for y0 in (None, torch.randn(2, 3)):
            y = linear_filter(x, a, y0)
            assert torch.isfinite(y[:37]).all() and torch.isnan(y[37:, 0, 1]).all()
            assert torch.isfinite(y[:, 1]).all()


@pytest.mark.parametrize("T", [1, 20, 64, 65, 300])  # 300: blocks (the others: the solve)
def test_gradient_through_per_step_coefficients(T):
    # per sequence (B' = B) and shared (B' = 1) per-step coefficients, with a carried state
    g = torch.Generator().manual_seed(T)
    x = torch.randn(T, 2, 3, generator=g, dtype=torch.float64, requires_grad=True)
    y0 = torch.randn(2, 3, generator=g, dtype=torch.float64, requires_grad=True)
    for shape in ((T, 2, 1), (T, 1, 1)):
        a = torch.rand(*shape, generator=g, dtype=torch.float64, requires_grad=True)
        # fast mode (a random projection of the Jacobian) for the long one: 11 s in full
        assert torch.autograd.gradcheck(linear_filter, (x, a, y0), fast_mode=T > 256)


def test_which_path():
    from momentumrnn.filters import _solves

    assert _solves(16, 100_000) and _solves(64, 8192) and _solves(256, 64) and _solves(128, 128)
    assert not _solves(17, 100_000) and not _solves(257, 2) and not _solves(256, 65) and not _solves(100, 8193)


def test_short_sequences_in_other_dtypes():
    # bfloat16 has no triangular solve: the blocked path, the same values to its rounding
    x = torch.randn(30, 2, 3)
    for a in (torch.tensor(0.7), torch.rand(30, 2, 1)):
        ref = loop(x.double(), a.double())
        got = linear_filter(x.bfloat16(), a.bfloat16())
        assert got.dtype == torch.bfloat16
        torch.testing.assert_close(got.double(), ref, rtol=0.05, atol=0.05)
