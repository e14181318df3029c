"""Step-wise momentum cells, for users who write their own loop or stream inputs one step at a
time (``torch.nn.LSTMCell`` and friends, plus the momentum state).

A cell's state is the layer's state without the layer dimension: ``LSTMState(h, c, momentum)`` /
``RNNState(h, momentum)`` with ``h`` of shape ``(B, H)`` (or ``(H,)`` unbatched). Running a cell
over a sequence equals the one-layer, one-direction layer of the same scheme; the state of one
can be handed to the other (index the layer dimension away or add it).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from . import _checks
from .layers import GATES, LSTMState, RNNState
from .schemes import ADAM_EPS, MomentumState, Scheme, restart_mu

__all__ = ["MomentumCellBase", "CELL_NAMES", "cell_class"]


class MomentumCellBase(nn.Module):
    host: str = "lstm"
    scheme_kind: str = "heavy_ball"

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: Optional[str] = None,
                 device=None, dtype=None, *, mu=None, epsilon=None, beta=None, restart=None):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.input_size = _checks.check_size("input_size", input_size)
        self.hidden_size = _checks.check_size("hidden_size", hidden_size)
        self.bias = bool(bias)
        self.nonlinearity = _checks.check_nonlinearity(self.host, nonlinearity)
        self.scheme = Scheme.create(self.scheme_kind, mu=mu, epsilon=epsilon, beta=beta, restart=restart)
        G = GATES[self.host] * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(G, input_size, **factory))
        self.weight_hh = nn.Parameter(torch.empty(G, hidden_size, **factory))
        if self.bias:
            self.bias_ih = nn.Parameter(torch.empty(G, **factory))
            self.bias_hh = nn.Parameter(torch.empty(G, **factory))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -stdv, stdv)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            s += ", bias=False"
        if self.host == "rnn" and self.nonlinearity != "tanh":
            s += f", nonlinearity={self.nonlinearity!r}"
        return s + "".join(f", {k}={v}" for k, v in self.scheme.hyper_parameters.items())

    def forward(self, input: Tensor, state=None):
        """One step. ``input``: ``(B, input_size)`` or ``(input_size,)``. Returns the new state."""
        p = self.weight_ih
        _checks.check_tensor("input", input, p.dtype, p.device)
        if input.dim() not in (1, 2) or input.shape[-1] != self.input_size:
            raise ValueError(f"{type(self).__name__}: expected input of shape (B, {self.input_size}) or "
                             f"({self.input_size},), got {tuple(input.shape)}")
        batched = input.dim() == 2
        x = input if batched else input.unsqueeze(0)
        B, H, G = x.shape[0], self.hidden_size, self.weight_hh.shape[0]
        h, c, mom = self._unpack(state, B, batched)
        zeros_h, zeros_g = x.new_zeros(B, H), x.new_zeros(B, G)
        h = zeros_h if h is None else h
        u = nn.functional.linear(x, self.weight_ih, self.bias_ih)
        r = nn.functional.linear(h, self.weight_hh, self.bias_hh)
        sch, kind = self.scheme, self.scheme.kind
        v = mom.v if mom.v is not None else zeros_g
        m = mom.m if mom.m is not None else zeros_g
        new = {}
        total = None
        if sch.scheduled:
            k = mom.step if mom.step is not None else torch.zeros(B, dtype=torch.long, device=x.device)
            k = k + 1
            if sch.restart > 0:
                k = torch.where(k > sch.restart, torch.ones_like(k), k)
            mu_k = restart_mu(k, x.dtype).unsqueeze(1)
            new["step"] = k
        if kind == "none":
            d = u
        elif kind in ("heavy_ball", "restart"):
            d = new["v"] = (sch.mu if kind == "heavy_ball" else mu_k) * v + sch.epsilon * u
        elif kind in ("adam", "rmsprop"):
            m = new["m"] = sch.beta * m + (1 - sch.beta) * u * u
            if kind == "adam":
                v = new["v"] = sch.mu * v + sch.epsilon * u
            else:
                v = sch.epsilon * u
            d = v / torch.sqrt(m + ADAM_EPS)
        else:  # nesterov: the cell takes g as its total pre-activation
            p_prev = mom.p if mom.p is not None else zeros_g
            d = None
            if self.host != "gru":
                p_new = new["p"] = r - sch.epsilon * u
                total = p_new + mu_k * (p_new - p_prev)
        if self.host == "rnn":
            pre = total if total is not None else d + r
            h = torch.tanh(pre) if self.nonlinearity == "tanh" else torch.relu(pre)
        elif self.host == "lstm":
            i, f, g, o = (total if total is not None else d + r).chunk(4, 1)
            c = torch.sigmoid(f) * (c if c is not None else zeros_h) + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
        else:
            r_rz, r_n = r[:, :2 * H], r[:, 2 * H:]
            if kind == "nesterov":
                p_prev = mom.p if mom.p is not None else zeros_g
                p_rz = r_rz - sch.epsilon * u[:, :2 * H]
                reset, z = torch.sigmoid(p_rz + mu_k * (p_rz - p_prev[:, :2 * H])).chunk(2, 1)
                p_n = reset * r_n - sch.epsilon * u[:, 2 * H:]
                n = torch.tanh(p_n + mu_k * (p_n - p_prev[:, 2 * H:]))
                new["p"] = torch.cat([p_rz, p_n], 1)
            else:
                reset, z = torch.sigmoid(d[:, :2 * H] + r_rz).chunk(2, 1)
                n = torch.tanh(d[:, 2 * H:] + reset * r_n)
            h = (1 - z) * n + z * h
        momentum = MomentumState(**{f: new[f] for f in sch.state_fields})
        if not batched:
            h = h.squeeze(0)
            c = c.squeeze(0) if self.host == "lstm" else None
            momentum = MomentumState(*(None if t is None else t.squeeze(0) for t in momentum))
        return LSTMState(h, c, momentum) if self.host == "lstm" else RNNState(h, momentum)

    def _unpack(self, state, B, batched):
        if state is None:
            return None, None, MomentumState()
        lstm = self.host == "lstm"
        if isinstance(state, Tensor) and not lstm:
            h, c, mom = state, None, None
        elif isinstance(state, tuple) and lstm and len(state) in (2, 3):
            h, c, mom = state[0], state[1], (state[2] if len(state) == 3 else None)
        elif isinstance(state, tuple) and not lstm and len(state) == 2 and not isinstance(state, MomentumState):
            h, c, mom = state[0], None, state[1]
        else:
            want = "(h, c) or LSTMState(h, c, momentum)" if lstm else "h or RNNState(h, momentum)"
            raise TypeError(f"{type(self).__name__} state must be {want}")
        p = self.weight_ih
        G = self.weight_hh.shape[0]
        lead = (B,) if batched else ()

        def take(name, t, width):
            if t is None:
                return None
            _checks.check_tensor(name, t, p.dtype, p.device)
            _checks.check_shape(name, t, lead + (width,))
            return t if batched else t.unsqueeze(0)

        h = take("h", h, self.hidden_size)
        c = take("c", c, self.hidden_size) if lstm else None
        mom = MomentumState(*(mom or ()))
        for name in ("v", "m", "p", "step"):
            if getattr(mom, name) is not None and name not in self.scheme.state_fields:
                raise ValueError(f"momentum state has field {name!r}, which scheme {self.scheme.kind!r} does not use")
        step = mom.step
        if step is not None:
            if tuple(step.shape) != lead or step.dtype not in (torch.int32, torch.int64):
                raise ValueError(f"momentum step must be an integer tensor of shape {lead}")
            step = (step if batched else step.unsqueeze(0)).long()
        return h, c, MomentumState(take("v", mom.v, G), take("m", mom.m, G), take("p", mom.p, G), step)


CELL_NAMES = {}
_PATTERNS = {"none": "{H}Cell", "heavy_ball": "Momentum{H}Cell", "adam": "Adam{H}Cell",
             "rmsprop": "RMSProp{H}Cell", "restart": "RestartMomentum{H}Cell", "nesterov": "SR{H}Cell"}
for _host, _H in (("rnn", "RNN"), ("lstm", "LSTM"), ("gru", "GRU")):
    for _kind, _pattern in _PATTERNS.items():
        _name = _pattern.format(H=_H)
        globals()[_name] = type(_name, (MomentumCellBase,), {
            "host": _host, "scheme_kind": _kind, "__module__": __name__,
            "__doc__": f"One step of the {_name[:-4]} layer (scheme {_kind!r}, host {_host!r}); "
                       f"``forward(input, state) -> new state``."})
        CELL_NAMES[_name] = (_host, _kind)
        __all__.append(_name)
del _host, _H, _kind, _pattern, _name


def cell_class(name: str) -> type:
    if name not in CELL_NAMES:
        raise ValueError(f"unknown cell {name!r}; expected one of {', '.join(CELL_NAMES)}")
    return globals()[name]
