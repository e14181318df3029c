"""``optim.orth_name``: another algorithm for the orthogonal parameters (MixedOptimizer)."""

from __future__ import annotations

import copy

import pytest
import torch
from toolkit_helpers import TINY_ADDING

from momentumrnn.toolkit.models import build_model, make_optimizer, split_parameters
from momentumrnn.toolkit.optimizers import MixedOptimizer
from momentumrnn.toolkit.tasks import build_task

OPTIM = {
    "name": "adam",
    "lr": 1e-2,
    "lr_orth": 3e-3,
    "weight_decay": 0.0,
    "momentum": 0.0,
    "alpha": 0.99,
    "betas": [0.9, 0.999],
    "eps": 1e-8,
    "nesterov": False,
    "orth_name": "rmsprop",
}


def _model(seed=0):
    torch.manual_seed(seed)
    task = build_task({"name": "adding", "seq_len": 6, "train_size": 8, "test_size": 4, "data_seed": 0})
    return build_model({"name": "MomentumDTRIV", "hidden_size": 4}, task), task


def _steps(model, task, opt, n=3):
    x, y = task.load()[0].x, task.load()[0].y
    for _ in range(n):
        opt.zero_grad()
        loss = task.per_sample_loss(model(task.inputs(x)), y).mean()
        loss.backward()
        opt.step()


def test_mixed_equals_two_separate_optimizers():
    a, task = _model()
    b, _ = _model()
    opt = make_optimizer(OPTIM, a)
    assert isinstance(opt, MixedOptimizer)
    assert [type(o) for o in opt.optimizers] == [torch.optim.Adam, torch.optim.RMSprop]
    orth_b, other_b = split_parameters(b)
    adam = torch.optim.Adam(other_b, lr=1e-2)
    rms = torch.optim.RMSprop(orth_b, lr=3e-3, alpha=0.99)
    _steps(a, task, opt)
    x, y = task.load()[0].x, task.load()[0].y
    for _ in range(3):
        adam.zero_grad()
        rms.zero_grad()
        task.per_sample_loss(b(task.inputs(x)), y).mean().backward()
        adam.step()
        rms.step()
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=n)
    # the learning rates live in the inner optimizers' groups
    assert [g["lr"] for g in opt.param_groups] == [1e-2, 3e-3]
    opt.param_groups[1]["lr"] = 1e-4
    assert opt.optimizers[1].param_groups[0]["lr"] == 1e-4


def test_state_dict_roundtrip_continues_identically():
    a, task = _model()
    opt = make_optimizer(OPTIM, a)
    _steps(a, task, opt, 2)
    saved_model = {k: v.clone() for k, v in a.state_dict().items()}
    saved_opt = copy.deepcopy(opt.state_dict())  # state tensors are live references
    _steps(a, task, opt, 2)
    b, _ = _model(seed=5)
    b.load_state_dict(saved_model)
    opt_b = make_optimizer(OPTIM, b)
    opt_b.load_state_dict(saved_opt)
    _steps(b, task, opt_b, 2)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    with pytest.raises(ValueError, match="another optimizer"):
        opt_b.load_state_dict({"state": {}, "param_groups": []})


def test_same_name_or_no_orthogonal_parameters_gives_one_optimizer():
    a, _ = _model()
    assert isinstance(make_optimizer(dict(OPTIM, orth_name="adam"), a), torch.optim.Adam)
    task = build_task({"name": "adding", "seq_len": 6, "train_size": 8, "test_size": 4, "data_seed": 0})
    lstm = build_model({"name": "LSTM", "hidden_size": 4}, task)
    assert isinstance(make_optimizer(OPTIM, lstm), torch.optim.Adam)


def test_training_run_with_orth_name_resumes(cli, tmp_path):
    out = tmp_path / "r"
    args = [
        "train",
        *TINY_ADDING,
        "--model",
        "MomentumDTRIV",
        "--optimizer",
        "adam",
        "--lr-orth",
        "1e-3",
        "--set",
        "optim.orth_name=rmsprop",
        "--set",
        "optim.alpha=0.99",
        "--out",
        out,
    ]
    code, _, err = cli([*args[:-2], "--epochs", "1", "--out", out])
    assert code == 0, err
    code, _, err = cli([*args, "--resume"])
    assert code == 0, err
    code, _, err = cli(["train", *TINY_ADDING, "--set", "optim.orth_name=lbfgs", "--out", tmp_path / "x"])
    assert code == 2 and "orth_name" in err


def test_rmsprop_tf_is_tensorflow_1s_update():
    # ms from ones, eps inside the square root: the ENRNN authors' optimizer, step by step
    from momentumrnn.toolkit.optimizers import RMSpropTF

    g = torch.Generator().manual_seed(0)
    p = torch.nn.Parameter(torch.randn(5, generator=g, dtype=torch.float64))
    ref, ms, mom = p.detach().clone(), torch.ones(5, dtype=torch.float64), torch.zeros(5, dtype=torch.float64)
    opt = RMSpropTF([p], lr=1e-2, alpha=0.9, eps=1e-10, momentum=0.5)
    for _ in range(4):
        grad = torch.randn(5, generator=g, dtype=torch.float64)
        p.grad = grad.clone()
        opt.step()
        ms = 0.9 * ms + 0.1 * grad * grad
        mom = 0.5 * mom + 1e-2 * grad / torch.sqrt(ms + 1e-10)
        ref = ref - mom
        torch.testing.assert_close(p.detach(), ref, rtol=1e-14, atol=1e-15)
    model, task = _model()
    opt = make_optimizer(dict(OPTIM, name="rmsprop_tf", orth_name=None, eps=1e-10), model)
    assert isinstance(opt, RMSpropTF) and [grp["lr"] for grp in opt.param_groups] == [1e-2, 3e-3]
    _steps(model, task, opt)
    with pytest.raises(ValueError, match="bad settings"):
        RMSpropTF([p], lr=-1.0)
