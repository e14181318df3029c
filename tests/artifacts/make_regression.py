"""Regenerate tests/artifacts/regression_v1.pt: for every paper-named layer, a state dict, an
input, an initial state and the outputs of version 0.1.0. The regression test checks that saved
models keep loading and give the same outputs. Only regenerate on a deliberate, documented change
of semantics."""

import os

import torch

import momentumrnn as mr


def main():
    torch.manual_seed(1234)
    cases = {}
    for name in mr.LAYER_NAMES:
        layer = mr.layer_class(name)(3, 4, num_layers=2, bidirectional=True, dtype=torch.float64)
        x = torch.randn(6, 2, 3, dtype=torch.float64)
        out, state = layer(x[:4])
        out2, state2 = layer(x[4:], state)
        cases[name] = {
            "state_dict": layer.state_dict(), "x": x,
            "out": torch.cat([out, out2]), "h": state2.h,
            "momentum": {k: v for k, v in state2.momentum._asdict().items() if v is not None},
        }
    path = os.path.join(os.path.dirname(__file__), "regression_v1.pt")
    torch.save({"version": mr.__version__, "cases": cases}, path)
    print("wrote", path, os.path.getsize(path), "bytes")


if __name__ == "__main__":
    main()
