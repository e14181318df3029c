"""Momentum recurrent layers: drop-in replacements for ``torch.nn.RNN``, ``LSTM`` and ``GRU``.

How each scheme runs (per layer and direction):

* ``none``, and heavy ball with ``mu = 0, epsilon = 1``: the native kernel, unchanged.
* heavy ball / scheduled-restart heavy ball: the drive is a causal linear filter of the inputs,
  ``v_t = sum_k (prod a) epsilon (W_ih x_k + b_ih)``, i.e. ``W_ih`` applied to the filtered input
  plus ``b_ih`` times a filtered constant channel. The native kernel (oneDNN / cuDNN) runs on
  ``[filter(x), filter(1)]`` with input weights ``epsilon [W_ih, b_ih]``. A carried momentum
  state ``v_0`` adds ``pi_t v_0`` (``pi_t`` the product of coefficients): exact, through extra
  input channels.
* Adam / RMSProp: the drive is computed for the whole sequence at once (filters), then a fused
  recurrence with a hand-written backward runs the cell (:mod:`momentumrnn.recurrence`).
* Nesterov (scheduled restart): the same fused recurrence with the Nesterov combination.

The reverse direction of a bidirectional layer is the forward recurrence on the sequence
reversed within each sequence's length, so its momentum runs backwards in time.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, _VF, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from . import _checks
from .filters import cumulative_decay, linear_filter
from .recurrence import DriveSpec, fused_recurrence
from .schemes import ADAM_EPS, MomentumState, Scheme, next_steps, restart_mu

__all__ = [
    "LSTMState",
    "RNNState",
    "MomentumRNNBase",
    "GATES",
]

GATES = {"rnn": 1, "lstm": 4, "gru": 3}


class LSTMState(NamedTuple):
    """State of an LSTM layer: ``h``, ``c`` as in ``torch.nn.LSTM`` plus the momentum state."""

    h: Tensor
    c: Tensor
    momentum: MomentumState


class RNNState(NamedTuple):
    """State of an RNN / GRU layer: ``h`` as in ``torch.nn`` plus the momentum state."""

    h: Tensor
    momentum: MomentumState


def _inverse_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


def _reverse_within(x: Tensor, lengths: Optional[Tensor]) -> Tensor:
    """Reverse each sequence of ``x`` (T, B, F) within its own length (padding stays in place)."""
    if lengths is None:
        return x.flip(0)
    T = x.shape[0]
    t = torch.arange(T, device=x.device).unsqueeze(1)
    n = lengths.to(x.device).unsqueeze(0)
    idx = torch.where(t < n, n - 1 - t, t)
    return x.gather(0, idx.unsqueeze(2).expand_as(x))


def _at_last_step(seq: Tensor, last: Optional[Tensor]) -> Tensor:
    """``seq[len_b - 1, b]`` for each sequence (``seq[-1]`` when all are full length)."""
    if last is None:
        return seq[-1]
    return seq[last, torch.arange(seq.shape[1], device=seq.device)]


class MomentumRNNBase(nn.Module):
    """Base of all momentum layers. Subclasses fix ``host`` (``"rnn"``, ``"lstm"``, ``"gru"``) and
    ``scheme`` (a kind of :class:`~momentumrnn.schemes.Scheme`); see the concrete classes."""

    host: str = "lstm"
    scheme_kind: str = "heavy_ball"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device=None,
        dtype=None,
        *,
        mu: Optional[float] = None,
        epsilon: Optional[float] = None,
        beta: Optional[float] = None,
        restart: Optional[int] = None,
        nonlinearity: Optional[str] = None,
        learn_mu: bool = False,
        learn_epsilon: bool = False,
        init: str = "torch",
        forget_bias: float = 1.0,
    ):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        _checks.set_recurrent_args(self, input_size, hidden_size, num_layers, batch_first, dropout, bidirectional)
        self.bias = bool(bias)
        self.nonlinearity = _checks.check_nonlinearity(self.host, nonlinearity)
        self.scheme = Scheme.create(self.scheme_kind, mu=mu, epsilon=epsilon, beta=beta, restart=restart)
        if learn_mu and self.scheme.kind not in ("heavy_ball", "adam"):
            raise ValueError(f"learn_mu needs a scheme with a constant mu (heavy_ball, adam), not {self.scheme.kind!r}")
        if learn_epsilon and self.scheme.kind == "none":
            raise ValueError("learn_epsilon needs a momentum scheme; scheme 'none' has no epsilon")
        self.learn_mu = bool(learn_mu)
        self.learn_epsilon = bool(learn_epsilon)
        G, H = GATES[self.host], self.hidden_size
        D = 2 if self.bidirectional else 1
        self._flat_weights_names = []
        for layer in range(self.num_layers):
            for direction in range(D):
                layer_input = self.input_size if layer == 0 else H * D
                suffix = "_reverse" if direction == 1 else ""
                names = [f"weight_ih_l{layer}{suffix}", f"weight_hh_l{layer}{suffix}"]
                shapes = [(G * H, layer_input), (G * H, H)]
                if self.bias:
                    names += [f"bias_ih_l{layer}{suffix}", f"bias_hh_l{layer}{suffix}"]
                    shapes += [(G * H,), (G * H,)]
                for name, shape in zip(names, shapes):
                    self.register_parameter(name, nn.Parameter(torch.empty(shape, **factory)))
                self._flat_weights_names.extend(names)
        # Learnable hyper-parameters: one scalar per layer and direction, kept in range by
        # mu = sigmoid(raw) in (0, 1) and epsilon = softplus(raw) > 0.
        for layer in range(self.num_layers):
            for direction in range(D):
                suffix = f"_l{layer}" + ("_reverse" if direction == 1 else "")
                if self.learn_mu:
                    mu0 = min(max(self.scheme.mu, 1e-4), 1 - 1e-4)
                    raw = torch.full((), math.log(mu0 / (1 - mu0)), **factory)
                    self.register_parameter("mu_raw" + suffix, nn.Parameter(raw))
                if self.learn_epsilon:
                    raw = torch.full((), _inverse_softplus(self.scheme.epsilon), **factory)
                    self.register_parameter("epsilon_raw" + suffix, nn.Parameter(raw))
        if init not in ("torch", "authors"):
            raise ValueError(f"init must be 'torch' (torch.nn's default) or 'authors' (SPEC 4), got {init!r}")
        self.init = init
        self.forget_bias = float(forget_bias)
        self.reset_parameters()

    # ------------------------------------------------------------------ parameters
    def reset_parameters(self) -> None:
        """``torch.nn``'s initialisation (uniform in ``±1/sqrt(hidden_size)``), or the authors'
        (SPEC 4) when the layer was built with ``init="authors"``."""
        if self.init == "authors":
            from .init import authors_init_

            authors_init_(self, forget_bias=self.forget_bias)
            return
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for name in self._flat_weights_names:
            nn.init.uniform_(getattr(self, name), -stdv, stdv)

    def flatten_parameters(self) -> None:
        """No-op, for API compatibility with ``torch.nn.RNNBase``."""

    def orthogonal_parameters(self) -> list:
        """Parameters trained with the orthogonal learning rate: none on this host."""
        return []

    def on_optimizer_step(self) -> None:
        """Called after every optimizer step (a no-op on this host)."""

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def all_weights(self):
        return [[getattr(self, n) for n in self._flat_weights_names[i:i + (4 if self.bias else 2)]]
                for i in range(0, len(self._flat_weights_names), 4 if self.bias else 2)]

    def _weights(self, layer: int, direction: int):
        suffix = f"_l{layer}" + ("_reverse" if direction == 1 else "")
        w_ih = getattr(self, "weight_ih" + suffix)
        w_hh = getattr(self, "weight_hh" + suffix)
        b_ih = getattr(self, "bias_ih" + suffix) if self.bias else None
        b_hh = getattr(self, "bias_hh" + suffix) if self.bias else None
        return w_ih, w_hh, b_ih, b_hh

    def hyper_parameters(self, layer: int = 0, direction: int = 0):
        """``(mu, epsilon)`` of one layer and direction: floats, or 0-d tensors when learnable."""
        suffix = f"_l{layer}" + ("_reverse" if direction == 1 else "")
        mu = torch.sigmoid(getattr(self, "mu_raw" + suffix)) if self.learn_mu else self.scheme.mu
        eps = F.softplus(getattr(self, "epsilon_raw" + suffix)) if self.learn_epsilon else self.scheme.epsilon
        return mu, eps

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.host == "rnn" and self.nonlinearity != "tanh":
            s += f", nonlinearity={self.nonlinearity!r}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        for k, v in self.scheme.hyper_parameters.items():
            s += f", {k}={v}"
        if self.learn_mu:
            s += ", learn_mu=True"
        if self.learn_epsilon:
            s += ", learn_epsilon=True"
        return s

    # ------------------------------------------------------------------ input / state checks
    def _check_input(self, input) -> bool:
        p = self.weight_ih_l0
        _checks.check_tensor("input", input, p.dtype, p.device)
        if input.dim() not in (2, 3):
            raise ValueError(f"{type(self).__name__}: expected input to be 2D (unbatched: L x input_size) or "
                             f"3D ({'N x L' if self.batch_first else 'L x N'} x input_size), got {input.dim()}D "
                             f"with shape {tuple(input.shape)}")
        if input.shape[-1] != self.input_size:
            raise ValueError(f"input.size(-1) must be equal to input_size. Expected {self.input_size}, "
                             f"got {input.shape[-1]}")
        return input.dim() == 3

    def _parse_state(self, state, batch: int, batched: bool):
        """Split and check the user's state; returns ``(h0, c0, MomentumState)`` with batch dims
        (``None`` for anything that starts at zero)."""
        if state is None:
            return None, None, MomentumState()
        lstm = self.host == "lstm"
        momentum = None
        if isinstance(state, Tensor):
            if lstm:
                raise TypeError("LSTM state must be (h, c) or (h, c, momentum), got a single tensor")
            h, c = state, None
        elif isinstance(state, (tuple, list)):
            n = len(state)
            if lstm and n in (2, 3):
                h, c = state[0], state[1]
                momentum = state[2] if n == 3 else None
            elif not lstm and n == 2 and not isinstance(state, MomentumState):
                h, c, momentum = state[0], None, state[1]
            elif not lstm and n == 1:
                h, c = state[0], None
            else:
                want = "(h, c) or (h, c, momentum)" if lstm else "h or (h, momentum)"
                raise TypeError(f"{type(self).__name__} state must be {want}, got a sequence of length {n}")
        else:
            raise TypeError(f"state must be a tensor or a tuple of tensors, got {type(state).__name__}")
        p = self.weight_ih_l0
        LD, H = self.num_layers * self.num_directions, self.hidden_size
        GH = GATES[self.host] * H
        lead = (LD, batch) if batched else (LD,)

        def take(name, value, width):
            if value is None:
                return None
            _checks.check_tensor(name, value, p.dtype, p.device)
            _checks.check_shape(name, value, lead + ((width,) if width else ()))
            return value if batched else value.unsqueeze(1)

        h0 = take("h0 (state h)", h, H)
        c0 = take("c0 (state c)", c, H) if lstm else None
        if momentum is None:
            return h0, c0, MomentumState()
        momentum = _checks.check_momentum_state(momentum, self.scheme, lead, batched, p.device)
        return h0, c0, MomentumState(
            take("momentum v", momentum.v, GH),
            take("momentum m", momentum.m, GH),
            take("momentum p", momentum.p, GH),
            momentum.step,
        )

    # ------------------------------------------------------------------ forward
    def forward(self, input, state=None):
        """Run the layer. Returns ``(output, state)``; see the class docstring for shapes."""
        packed = isinstance(input, PackedSequence)
        if packed:
            p = self.weight_ih_l0
            _checks.check_tensor("input (PackedSequence.data)", input.data, p.dtype, p.device)
            if input.data.dim() != 2 or input.data.shape[-1] != self.input_size:
                raise ValueError(f"input.size(-1) must be equal to input_size. Expected {self.input_size}, "
                                 f"got {input.data.shape[-1]}")
            x, lengths = pad_packed_sequence(input)
            lengths = lengths.to(x.device)
            batched = True
        else:
            batched = self._check_input(input)
            if not batched:
                x = input.unsqueeze(1)
            else:
                x = input.transpose(0, 1) if self.batch_first else input
            lengths = None
            if x.shape[0] == 0:
                raise ValueError("input has sequence length 0; expected at least one time step")
        B = x.shape[1]
        h0, c0, mom0 = self._parse_state(state, B, batched)
        last = None if lengths is None else lengths - 1
        valid = None
        if lengths is not None:
            valid = (torch.arange(x.shape[0], device=x.device).unsqueeze(1) < lengths.unsqueeze(0)).unsqueeze(2)

        D = self.num_directions
        h_n, c_n = [], []
        mom_n = {name: [] for name in self.scheme.state_fields}
        layer_input = x
        for layer in range(self.num_layers):
            outs = []
            for direction in range(D):
                i = layer * D + direction
                pick = lambda t: None if t is None else t[i]  # noqa: E731
                out, hT, cT, momT = self._run_direction(
                    layer, direction, layer_input, lengths, last, valid,
                    pick(h0), pick(c0), MomentumState(*(pick(t) for t in mom0)),
                )
                outs.append(out)
                h_n.append(hT)
                c_n.append(cT)
                for name in mom_n:
                    mom_n[name].append(getattr(momT, name))
            layer_input = outs[0] if D == 1 else torch.cat(outs, 2)
            if self.dropout and self.training and layer < self.num_layers - 1:
                layer_input = F.dropout(layer_input, self.dropout, True)
        output = layer_input

        momentum = MomentumState(**{name: torch.stack(v) for name, v in mom_n.items()})
        h_n = torch.stack(h_n)
        c_n = torch.stack(c_n) if self.host == "lstm" else None
        if packed:
            sorted_out = output.index_select(1, input.sorted_indices) if input.sorted_indices is not None else output
            data = pack_padded_sequence(sorted_out, lengths[input.sorted_indices].cpu()
                                        if input.sorted_indices is not None else lengths.cpu(),
                                        enforce_sorted=True).data
            output = PackedSequence(data, input.batch_sizes, input.sorted_indices, input.unsorted_indices)
        elif not batched:
            output = output.squeeze(1)
            h_n = h_n.squeeze(1)
            c_n = c_n.squeeze(1) if c_n is not None else None
            momentum = MomentumState(*(None if t is None else t.squeeze(1) for t in momentum))
        elif self.batch_first:
            output = output.transpose(0, 1)
        if self.host == "lstm":
            return output, LSTMState(h_n, c_n, momentum)
        return output, RNNState(h_n, momentum)

    def _run_direction(self, layer, direction, x, lengths, last, valid, h0, c0, mom0):
        w_ih, w_hh, b_ih, b_hh = self._weights(layer, direction)
        mu, eps = self.hyper_parameters(layer, direction)
        if direction == 1:
            x = _reverse_within(x, lengths)
        kind = self.scheme.kind
        trainable = self.learn_mu or self.learn_epsilon
        if kind == "none" or (kind == "heavy_ball" and mu == 0.0 and eps == 1.0 and not trainable and mom0.v is None):
            out, hT, cT = self._native(x, lengths, h0, c0, [w_ih, w_hh] + ([b_ih, b_hh] if self.bias else []))
            mom = MomentumState()
            if kind == "heavy_ball":
                x_last = _at_last_step(x, last)
                mom = MomentumState(v=torch.addmm(b_ih, x_last, w_ih.t()) if self.bias else x_last @ w_ih.t())
        elif self.scheme.linear:
            out, hT, cT, mom = self._filtered_native(x, lengths, last, h0, c0, mom0, w_ih, w_hh, b_ih, b_hh, mu, eps)
        else:
            out, hT, cT, mom = self._fused(x, lengths, last, valid, h0, c0, mom0, w_ih, w_hh, b_ih, b_hh, mu, eps)
        if direction == 1:
            out = _reverse_within(out, lengths)
        return out, hT, cT, mom

    def _coefficients(self, T: int, step0: Optional[Tensor], dtype, device):
        """Per-step coefficient of the scheduled schemes: ``(mu_k (T, B', 1), k (T, B'))``."""
        if step0 is None:
            step0 = torch.zeros(1, dtype=torch.long, device=device)
        k = next_steps(step0, T, self.scheme.restart)
        return restart_mu(k, dtype).unsqueeze(2), k

    def _native(self, x, lengths, h0, c0, weights):
        """One native single-layer, single-direction call; returns ``(out, h_T, c_T)``."""
        has_biases = self.bias
        T, B, _ = x.shape
        H = self.hidden_size
        if h0 is None:
            h0 = x.new_zeros(B, H)
        if self.host == "lstm":
            hx = (h0.unsqueeze(0), (c0 if c0 is not None else x.new_zeros(B, H)).unsqueeze(0))
            fn = _VF.lstm
        else:
            hx = h0.unsqueeze(0)
            fn = _VF.gru if self.host == "gru" else (_VF.rnn_tanh if self.nonlinearity == "tanh" else _VF.rnn_relu)
        if lengths is None:
            res = fn(x, hx, weights, has_biases, 1, 0.0, self.training, False, False)
            out, state = res[0], res[1:]
        else:
            packed = pack_padded_sequence(x, lengths.cpu(), enforce_sorted=False)
            si, ui = packed.sorted_indices, packed.unsorted_indices
            hx = tuple(t.index_select(1, si) for t in hx) if isinstance(hx, tuple) else hx.index_select(1, si)
            res = fn(packed.data, packed.batch_sizes, hx, weights, has_biases, 1, 0.0, self.training, False)
            out = pad_packed_sequence(PackedSequence(res[0], packed.batch_sizes, si, ui), total_length=T)[0]
            state = tuple(t.index_select(1, ui) for t in res[1:])
        hT = state[0][0]
        cT = state[1][0] if self.host == "lstm" else None
        return out, hT, cT

    def _filtered_native(self, x, lengths, last, h0, c0, mom0, w_ih, w_hh, b_ih, b_hh, mu, eps):
        T, B, _ = x.shape
        GH = w_ih.shape[0]
        if self.scheme.kind == "heavy_ball":
            coeff = mu if isinstance(mu, Tensor) else torch.tensor(mu, dtype=x.dtype, device=x.device)
            k = None
        else:
            coeff, k = self._coefficients(T, mom0.step, x.dtype, x.device)
        cols = [linear_filter(x, coeff)]
        w_cols = [w_ih]
        if self.bias:
            ones = x.new_ones(T, coeff.shape[1] if coeff.dim() else 1, 1)
            cols.append(linear_filter(ones, coeff).expand(T, B, 1))
            w_cols.append(b_ih.unsqueeze(1))
        w_in = torch.cat(w_cols, 1) * eps
        v0 = mom0.v
        if v0 is not None:
            # v_t gains pi_t v0: one extra input channel per batch element (v0 as weights) or per
            # gate unit (v0 as input), whichever is fewer.
            pi = cumulative_decay(coeff, T)
            if B <= GH:
                cols.append(pi * torch.eye(B, dtype=x.dtype, device=x.device))
                w_in = torch.cat([w_in, v0.t()], 1)
            else:
                cols.append(pi * v0)
                w_in = torch.cat([w_in, torch.eye(GH, dtype=x.dtype, device=x.device)], 1)
        x_in = torch.cat(cols, 2) if len(cols) > 1 else cols[0]
        weights = [w_in, w_hh] + ([torch.zeros_like(b_hh), b_hh] if self.bias else [])
        out, hT, cT = self._native(x_in, lengths, h0, c0, weights)
        v_T = _at_last_step(x_in, last) @ w_in.t()
        step = None
        if k is not None:
            step = _at_last_step(k.expand(T, B), last)
        return out, hT, cT, MomentumState(v=v_T, step=step)

    def _fused(self, x, lengths, last, valid, h0, c0, mom0, w_ih, w_hh, b_ih, b_hh, mu, eps):
        T, B, I = x.shape
        H, GH = self.hidden_size, w_ih.shape[0]
        kind = self.scheme.kind
        # The part of b_hh added to p_t directly (GRU keeps b_hn inside r * (W_hn h + b_hn)).
        b_hn = None
        if self.bias:
            bias_e = torch.cat([b_hh[:2 * H], b_hh.new_zeros(H)]) if self.host == "gru" else b_hh
            b_hn = b_hh[2 * H:] if self.host == "gru" else None
        else:
            bias_e = x.new_zeros(GH)
            b_hn = x.new_zeros(H) if self.host == "gru" else None
        alpha = beta_k = k = None
        if kind == "nesterov":
            beta_k, k = self._coefficients(T, mom0.step, x.dtype, x.device)
            alpha = 1 + beta_k
        p0 = mom0.p
        if kind == "nesterov" and p0 is None:
            p0 = x.new_zeros(B, GH)
        common = dict(
            c0=(c0 if c0 is not None else x.new_zeros(B, H)) if self.host == "lstm" else None,
            b_hn=b_hn, nonlinearity=self.nonlinearity or "tanh", alpha=alpha, beta=beta_k, p0=p0, valid=valid,
        )
        h0 = h0 if h0 is not None else x.new_zeros(B, H)
        if not (self.learn_mu or self.learn_epsilon):
            # The drive is computed inside the loop (no (T, B, G*H) temporaries).
            spec = DriveSpec(kind, mu=mu, epsilon=eps, beta=self.scheme.beta)
            hs, cs, ps, v_T, m_T = fused_recurrence(
                self.host, h0, w_hh, spec=spec, x=x, w_ih=w_ih, b_ih=b_ih, bias_e=bias_e,
                v0=mom0.v if kind == "adam" else None, m0=mom0.m, last=last, **common)
            v = m = None
        else:
            # Learnable mu / epsilon: the drive for the whole sequence with autograd.
            flat = x.reshape(T * B, I)
            u = (torch.addmm(b_ih, flat, w_ih.t()) if self.bias else flat @ w_ih.t()).view(T, B, GH)
            v = m = None
            if kind in ("adam", "rmsprop"):
                beta = self.scheme.beta
                m = linear_filter((1 - beta) * u * u, torch.tensor(beta, dtype=x.dtype, device=x.device), mom0.m)
                if kind == "adam":
                    coeff = mu if isinstance(mu, Tensor) else torch.tensor(mu, dtype=x.dtype, device=x.device)
                    v = linear_filter(u * eps, coeff, mom0.v)
                    e = torch.addcdiv(bias_e, v, torch.sqrt(m + ADAM_EPS))
                else:
                    e = torch.addcdiv(bias_e, u * eps, torch.sqrt(m + ADAM_EPS))
            else:  # nesterov: p_t = r_t - eps u_t
                e = bias_e - u * eps
            hs, cs, ps, _, _ = fused_recurrence(self.host, h0, w_hh, e=e, **common)
            v_T = _at_last_step(v, last) if v is not None else None
            m_T = _at_last_step(m, last) if m is not None else None
        hT = _at_last_step(hs, last)
        cT = _at_last_step(cs, last) if cs is not None else None
        out = hs if valid is None else torch.where(valid, hs, 0)
        mom = MomentumState(
            v=v_T,
            m=m_T,
            p=_at_last_step(ps, last) if ps is not None else None,
            step=_at_last_step(k.expand(T, B), last) if k is not None else None,
        )
        return out, hT, cT, mom


_SHAPES_DOC = r"""
    Args:
        input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, device,
        dtype: as in ``torch.nn.{torch_name}``.{nonlinearity_doc}
{hp_doc}        learn_mu, learn_epsilon: make ``mu`` / ``epsilon`` learnable, one scalar per layer and
            direction, kept in range (``mu = sigmoid(mu_raw_l0)``, ``epsilon = softplus(...)``).
        init: ``"torch"`` (default, ``torch.nn``'s) or ``"authors"`` (SPEC 4: orthogonal
            ``W_ih``, identity blocks in ``W_hh``, forget biases ``forget_bias``, other biases 0).
        forget_bias: forget-gate bias of the authors' initialisation (1.0; TIMIT used -4.0).

    Inputs: ``input, state``
        * **input**: ``(L, N, H_in)``, ``(N, L, H_in)`` with ``batch_first=True``, unbatched
          ``(L, H_in)``, or a ``PackedSequence``.
        * **state** (optional): a ``{state_name}`` returned by a previous call (continues the
          sequence exactly, momentum included), ``torch.nn``'s {native_state}, or ``None`` (zeros).

    Outputs: ``output, state``
        * **output**: exactly as ``torch.nn.{torch_name}``: ``(L, N, D * H_out)``.
        * **state**: ``{state_name}`` with ``h`` ``(D * num_layers, N, H_out)``{c_doc} and
          ``momentum``, a :class:`MomentumState` whose ``{fields}`` are
          ``(D * num_layers, N, {G}*H_out)``{step_doc}.

    Equivalent to this loop for one layer and direction (``u_t = W_ih x_t + b_ih``)::

{loop}
"""

_LOOPS = {
    "none": "        d = u",
    "heavy_ball": "        v = mu * v + epsilon * u; d = v",
    "adam": "        v = mu * v + epsilon * u; m = beta * m + (1 - beta) * u * u\n"
            "        d = v / sqrt(m + 1e-16)",
    "rmsprop": "        m = beta * m + (1 - beta) * u * u; d = epsilon * u / sqrt(m + 1e-16)",
    "restart": "        k = k % restart + 1 if restart else k + 1; mu_k = (k - 1) / (k + 2)\n"
               "        v = mu_k * v + epsilon * u; d = v",
    "nesterov": "        k = k % restart + 1 if restart else k + 1; mu_k = (k - 1) / (k + 2)\n"
                "        p_new = W_hh h + b_hh - epsilon * u; g = p_new + mu_k * (p_new - p); p = p_new\n"
                "        # g replaces the cell's total pre-activation d + W_hh h + b_hh",
}
_CELL_LOOPS = {
    "rnn": "        h = tanh(d + W_hh h + b_hh)",
    "lstm": "        i, f, g, o = (d + W_hh h + b_hh).chunk(4)\n"
            "        c = sigmoid(f) * c + sigmoid(i) * tanh(g); h = sigmoid(o) * tanh(c)",
    "gru": "        r, z = sigmoid(d[:2H] + W_h(r,z) h + b_h(r,z)).chunk(2)\n"
           "        n = tanh(d[2H:] + r * (W_hn h + b_hn)); h = (1 - z) * n + z * h",
}
_HP_DOC = {
    "mu": "momentum ``mu`` in [0, 1)",
    "epsilon": "step size ``epsilon`` > 0",
    "beta": "second-moment decay ``beta`` in [0, 1)",
    "restart": "restart period ``F`` >= 0 of the schedule ``mu_k = (k-1)/(k+2)`` (0: never restart)",
}

#: paper name -> (host, scheme kind, one-line description)
LAYER_NAMES = {}


def _define(name: str, host: str, kind: str, summary: str):
    torch_name = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}[host]
    defaults = Scheme.create(kind).hyper_parameters
    hp_doc = "".join(f"        {k}: {_HP_DOC[k]} (default {v}).\n" for k, v in defaults.items())
    loop = ("    for t in range(T):\n        u = W_ih @ x[t] + b_ih\n" + _LOOPS[kind] + "\n"
            + (_CELL_LOOPS[host] if kind != "nesterov" else _CELL_LOOPS[host].replace("d + W_hh h + b_hh", "g")))
    fields = Scheme.create(kind).state_fields
    doc = f"{summary}\n" + _SHAPES_DOC.format(
        torch_name=torch_name,
        nonlinearity_doc="\n        nonlinearity: ``'tanh'`` or ``'relu'``." if host == "rnn" else "",
        hp_doc=hp_doc,
        state_name="LSTMState(h, c, momentum)" if host == "lstm" else "RNNState(h, momentum)",
        native_state="``(h_0, c_0)``" if host == "lstm" else "``h_0``",
        c_doc=", ``c`` likewise" if host == "lstm" else "",
        fields=", ".join(f for f in fields if f != "step") or "(no fields)",
        G=GATES[host],
        step_doc=" and the integer restart counter ``step`` ``(D * num_layers, N)``" if "step" in fields else "",
        loop=loop,
    )
    cls = type(name, (MomentumRNNBase,), {"__doc__": doc, "host": host, "scheme_kind": kind,
                                          "__module__": __name__})
    LAYER_NAMES[name] = (host, kind, summary)
    return cls


_PAPER = {
    "none": ("{H}", "Plain {H} on the same machinery as the momentum layers (d_t = u_t)."),
    "heavy_ball": ("Momentum{H}", "Momentum{H} (heavy ball): v_t = mu v_{{t-1}} + epsilon u_t drives the cell."),
    "adam": ("Adam{H}", "Adam{H}: the heavy-ball drive normalised by sqrt of a second moment of u_t."),
    "rmsprop": ("RMSProp{H}", "RMSProp{H}: epsilon u_t normalised by sqrt of a second moment of u_t."),
    "restart": ("RestartMomentum{H}", "Heavy ball with scheduled restart: mu_k = (k-1)/(k+2), k restarting every `restart` steps."),
    "nesterov": ("SR{H}", "SR{H}: Nesterov momentum with scheduled restart (depends on h_{{t-1}})."),
}

for _host, _H in (("rnn", "RNN"), ("lstm", "LSTM"), ("gru", "GRU")):
    for _kind, (_pattern, _summary) in _PAPER.items():
        _name = _pattern.format(H=_H)
        globals()[_name] = _define(_name, _host, _kind, _summary.format(H=_H))
        __all__.append(_name)
del _host, _H, _kind, _pattern, _summary, _name


_ORTHOGONAL_HOSTS = ("exprnn", "dtriv", "scornn", "scurnn")


def layer_class(name: str) -> type:
    """The layer class of a paper name: ``"MomentumLSTM"``, ``"AdamGRU"``, ``"SRLSTM"``, ``"LSTM"``,
    ... and the orthogonal hosts' ``"MomentumDTRIV"``, ``"ScoRNN"``, ... (``momentumrnn.orthogonal``)."""
    if name in LAYER_NAMES:
        return globals()[name]
    from . import orthogonal

    if name in orthogonal.ORTHOGONAL_LAYER_NAMES:
        return orthogonal.layer_class(name)
    raise ValueError(f"unknown layer {name!r}; expected one of {', '.join(LAYER_NAMES)}, "
                     f"{', '.join(orthogonal.ORTHOGONAL_LAYER_NAMES)}")


def build_layer(host: str, scheme: str, input_size: int, hidden_size: int, **kwargs) -> nn.Module:
    """Build a layer from a host (``"rnn"``, ``"lstm"``, ``"gru"``, or the orthogonal ``"exprnn"``,
    ``"dtriv"``, ``"scornn"``, ``"scurnn"``) and a scheme kind."""
    from .schemes import canonical_kind

    hosts = (*GATES, *_ORTHOGONAL_HOSTS)
    if not isinstance(host, str) or host.lower() not in hosts:
        raise ValueError(f"unknown host {host!r}; expected one of {', '.join(hosts)}")
    host = host.lower()
    if host in _ORTHOGONAL_HOSTS:
        from .orthogonal import build_orthogonal_layer

        return build_orthogonal_layer(host, scheme, input_size, hidden_size, **kwargs)
    kind = canonical_kind(scheme)
    for name, (h, k, _) in LAYER_NAMES.items():
        if h == host and k == kind:
            return globals()[name](input_size, hidden_size, **kwargs)
    raise AssertionError("unreachable")  # every host x kind is defined above


__all__ += ["layer_class", "build_layer", "LAYER_NAMES"]
