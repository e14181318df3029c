"""``model.init_forget_bias``: the same forget-gate shift for every LSTM scheme."""

from __future__ import annotations

import pytest
import torch

from momentumrnn.toolkit.errors import ToolkitError
from momentumrnn.toolkit.models import build_model
from momentumrnn.toolkit.tasks import build_task

TASK = {"name": "adding", "seq_len": 5, "train_size": 4, "test_size": 2, "data_seed": 0}


@pytest.mark.parametrize("name", ["LSTM", "MomentumLSTM", "AdamLSTM", "SRLSTM"])
def test_shift_goes_to_the_recurrent_forget_bias(name):
    task = build_task(TASK)
    torch.manual_seed(3)
    plain = build_model({"name": name, "hidden_size": 4, "num_layers": 2}, task)
    torch.manual_seed(3)
    shifted = build_model({"name": name, "hidden_size": 4, "num_layers": 2, "init_forget_bias": 2.5}, task)
    a, b = dict(plain.named_parameters()), dict(shifted.named_parameters())
    for k in a:
        diff = b[k] - a[k]
        if "bias_hh" in k:  # forget slice [H:2H] (torch.nn's gate order i, f, g, o) moved by exactly 2.5
            torch.testing.assert_close(diff[4:8], torch.full((4,), 2.5))
            assert diff[:4].abs().max() == 0 and diff[8:].abs().max() == 0
        else:  # b_ih sits inside the momentum: untouched
            assert diff.abs().max() == 0, k


def test_refused_where_it_does_not_apply():
    task = build_task(TASK)
    with pytest.raises(ToolkitError, match="LSTM hosts only"):
        build_model({"name": "GRU", "hidden_size": 4, "init_forget_bias": 1.0}, task)
    with pytest.raises(ToolkitError, match="bias=False"):
        build_model({"name": "LSTM", "hidden_size": 4, "bias": False, "init_forget_bias": 1.0}, task)
