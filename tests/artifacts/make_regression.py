"""Regenerate tests/artifacts/regression_v1.pt: for every paper-named layer, a state dict, an
input, an initial state and the outputs of version 0.1.0. The regression test checks that saved
models keep loading and give the same outputs. Only regenerate on a deliberate, documented change
of semantics. ``python make_regression.py [PATH]`` writes to PATH instead (to compare without
overwriting the artifact)."""

import os
import sys

import torch

import momentumrnn as mr


#: the layers of version 0.1.0 (the gated hosts), in its order and under its names (``SR<host>`` is
#: now an alias of ``Nesterov<host>``); the modReLU hosts came later and are not in the artifact
V1_NAMES = [prefix + host for host in ("RNN", "LSTM", "GRU")
            for prefix in ("", "Momentum", "Adam", "RMSProp", "RestartMomentum", "SR")]


def main(path=None):
    torch.manual_seed(1234)
    cases = {}
    for name in V1_NAMES:
        # the second call continues the first with its momentum: the carrying layer
        layer = mr.layer_class(name)(3, 4, num_layers=2, bidirectional=True, dtype=torch.float64,
                                     carry_momentum=True)
        x = torch.randn(6, 2, 3, dtype=torch.float64)
        out, state = layer(x[:4])
        out2, state2 = layer(x[4:], state)
        parts = dict(zip(layer.state_names, (state2,) if isinstance(state2, torch.Tensor) else state2))
        cases[name] = {
            "state_dict": layer.state_dict(), "x": x,
            "out": torch.cat([out, out2]), "h": parts["h"],
            "momentum": {k: v for k, v in parts.items() if k not in ("h", "c")},
        }
    path = path or os.path.join(os.path.dirname(__file__), "regression_v1.pt")
    torch.save({"version": mr.__version__, "cases": cases}, path)
    print("wrote", path, os.path.getsize(path), "bytes")


if __name__ == "__main__":
    main(*sys.argv[1:2])
