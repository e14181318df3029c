"""The modReLU family of hosts: ``h_t = modReLU(h_{t-1} B + d_t)`` with a structured recurrent
matrix ``B = weight_hh_l0`` (orthogonal, unitary, or ENRNN's block matrix), ``u_t = W_ih x_t`` (no
input bias), ``d_t`` the scheme's drive and a learned modReLU bias (docs/equations.md, section 3).

:class:`ModReLUBase` holds what these hosts share: input and state checks (real, or complex for
unitary hosts), the internal ``[Re, Im]`` pair form of complex units, the per-direction parameters
the modReLU backends take, and the literal one-step update.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .. import _checks, exporting
from ..backends.modrelu import ModReLUParams
from ..backends.scan import RealStep
from ..orthogonal.modrelu import modrelu
from ..schemes import MomentumState, Scheme, pair_square
from ..sequence import SequenceBase
from ..state import Slot

if TYPE_CHECKING:
    from torch.nn.utils.parametrize import ParametrizationList
    from torch.types import Device

    from .._typing import Hidden, HyperParameters, StepResult

__all__ = ["ModReLUBase", "modrelu_step", "real_modrelu_step"]


def modrelu_step(
    p: ModReLUParams, x: Tensor, hidden: Hidden, mom: MomentumState, scheme: Scheme, hp: HyperParameters
) -> StepResult:
    """The literal step ``h = modReLU(combine(h B, d))`` of a modReLU host with its scheme, on
    complex numbers for unitary hosts: ``(output [Re h, Im h] or h, {"h": h}, momentum)``."""
    if p.paired:
        H = p.bias.shape[0]
        w = torch.complex(p.w_in[:H], p.w_in[H:])
        B = torch.complex(p.W[0], p.W[1])
        u = x.to(w.dtype) @ w.t()
    else:
        w, B = p.w_in, p.W
        u = x @ w.t()
    h = hidden["h"] if hidden["h"] is not None else u.new_zeros(u.shape[0], B.shape[0])
    drive, advance = scheme.step(u, mom, *hp)
    h = modrelu(drive.combine(h @ B), p.bias)
    out = torch.cat([h.real, h.imag], -1) if p.paired else h
    return out, {"h": h}, advance()


def _modrelu_pairs(z: Tensor, bias: Tensor) -> Tensor:
    """:func:`~momentumrnn.orthogonal.modrelu.modrelu_pairs` with the modulus as
    ``sqrt(re^2 + im^2)``: torch.export decomposes ``torch.hypot`` into ``prims.hypot``, which has
    no autograd formula (which torch.export's training graphs need when a parameter requires
    grad)."""
    re, im = z.chunk(2, -1)
    r = torch.sqrt(re * re + im * im)
    scale = torch.where(r > 0, torch.relu(r + bias) / torch.where(r > 0, r, 1), 0)
    return z * torch.cat([scale, scale], -1)


def real_modrelu_step(p: ModReLUParams, scheme: Scheme) -> RealStep:
    """:func:`modrelu_step` on the internal real form: complex units as ``[Re, Im]`` pairs of reals
    (``h B`` one real matrix product with ``[[Re B, Im B], [-Im B, Re B]]``, the scheme's second
    moment on the modulus, :func:`~momentumrnn.schemes.pair_square`, carried in that layout: both
    halves equal)."""
    if not p.paired:

        def step(
            q: tuple[Tensor, ...], x: Tensor, hidden: Mapping[str, Tensor], mom: MomentumState, hp: HyperParameters
        ) -> StepResult:
            w_in, W, bias = q
            drive, advance = scheme.step(x @ w_in.t(), mom, *hp)
            h = modrelu(drive.combine(hidden["h"] @ W), bias)
            return h, {"h": h}, advance()

        return RealStep(step, (p.w_in, p.W, p.bias))
    Wr, Wi = p.W[0], p.W[1]
    Bm = torch.cat([torch.cat([Wr, Wi], 1), torch.cat([-Wi, Wr], 1)], 0)

    def pair_step(
        q: tuple[Tensor, ...], x: Tensor, hidden: Mapping[str, Tensor], mom: MomentumState, hp: HyperParameters
    ) -> StepResult:
        w_in, Bm, bias = q
        drive, advance = scheme.step(x @ w_in.t(), mom, *hp, square=pair_square)
        h = _modrelu_pairs(drive.combine(hidden["h"] @ Bm), bias)
        return h, {"h": h}, advance()

    def enter(mom: MomentumState) -> MomentumState:
        return mom if mom.m is None else mom._replace(m=torch.cat([mom.m, mom.m], -1))

    def leave(mom: MomentumState) -> MomentumState:
        return mom if mom.m is None else mom._replace(m=mom.m.chunk(2, -1)[0])

    return RealStep(pair_step, (p.w_in, Bm, p.bias), enter, leave)


class ModReLUBase(SequenceBase):
    """Base of the modReLU hosts (orthogonal / unitary hosts and ENRNN)."""

    family = "modrelu"
    unitary = False
    complex_input = False

    #: set by torch.nn.utils.parametrize (a ModuleDict of ParametrizationLists)
    parametrizations: Mapping[str, ParametrizationList]
    modrelu_bias_l0: Tensor
    _export_sources: dict[str, dict[str, Tensor]]

    def _setup_modrelu(self, bias: bool, dtype: torch.dtype | None, complex_input: bool) -> None:
        if bias:
            raise ValueError(
                "modReLU hosts have no input bias (W_ih x_t enters the momentum as is); the "
                "modReLU bias is always learned. Pass bias=False or leave it out"
            )
        self.bias = False
        if dtype is not None and (not isinstance(dtype, torch.dtype) or not dtype.is_floating_point):
            raise TypeError(f"dtype must be a real floating dtype (complex tensors of scuRNN follow it), got {dtype}")
        if complex_input and not self.unitary:
            raise ValueError("complex_input applies to the scuRNN host (unitary_scaled_cayley) only")
        self.complex_input = bool(complex_input)

    # ------------------------------------------------------------------ host interface
    def _out_features(self) -> int:
        return 2 * self.hidden_size if self.unitary else self.hidden_size

    def _slots(self) -> tuple[dict[str, Slot], dict[str, Slot]]:
        H, c = self.hidden_size, self.unitary
        return {"h": Slot(H, c)}, {"v": Slot(H, c), "m": Slot(H), "p": Slot(H, c)}

    def _reference(self) -> Tensor:
        return self.modrelu_bias_l0

    def _check_data(self, name: str, data: object) -> None:
        if not isinstance(data, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(data).__name__}")
        ref = self._reference()
        if self.unitary and ref.dtype in (torch.float16, torch.bfloat16):
            raise TypeError(
                f"{self._name} has {ref.dtype} parameters, but its hidden state is complex and torch has no "
                "complex bfloat16 and too few complex float16 operations (torch.polar, complex matmul on "
                "CPU); keep the layer in float32 or float64 (under torch.autocast it computes in float32)"
            )
        if self.complex_input:
            if not data.is_complex():
                raise TypeError(
                    f"{self._name} was built with complex_input=True and expects complex {name}, "
                    f"got real dtype {data.dtype}"
                )
            if data.real.dtype != ref.dtype:
                raise TypeError(f"{name} has dtype {data.dtype} but the layer's parameters are {ref.dtype}")
        elif data.is_complex():
            hint = (
                " (build it with complex_input=True to take complex input)"
                if self.unitary
                else "; only the scuRNN host takes complex input"
            )
            raise TypeError(f"{self._name} expects real {name}, got complex dtype {data.dtype}{hint}")
        else:
            _checks.check_tensor(name, data, ref.dtype, ref.device)
        if data.device != ref.device:
            raise ValueError(f"{name} is on device {data.device} but the layer's parameters are on {ref.device}")

    def _prepare_input(self, x: Tensor) -> Tensor:
        return torch.cat([x.real, x.imag], -1) if self.complex_input else x

    def _input_weight(self, layer: int, sfx: str) -> Tensor:
        """The real ``(N, I')`` matrix with ``u = x w^T`` in the internal (pair) form."""
        w = getattr(self, "weight_ih" + sfx)
        if not self.unitary:
            return w
        if layer == 0 and self.complex_input:  # x = [Re x, Im x]
            return torch.cat([torch.cat([w.real, -w.imag], 1), torch.cat([w.imag, w.real], 1)], 0)
        return torch.cat([w.real, w.imag], 0)

    def _recurrent_weight(self, sfx: str) -> Tensor:
        """``B`` (evaluated once per forward); for unitary hosts its real and imaginary parts
        ``(2, H, H)``. Under ``torch.onnx.export``, a constant computed from the parameters
        (:func:`momentumrnn.exporting.fold`: ONNX has no matrix exponential, solve or eigenvalues)."""
        plist = self.parametrizations["weight_hh" + sfx]
        if exporting.onnx_exporting():
            return exporting.fold(self._name, plist, self._export_sources.get(sfx), self._real_parts)
        if not (torch.compiler.is_compiling() or torch.jit.is_tracing()):  # real tensors only (no fakes)
            self._export_sources[sfx] = exporting.sources(plist)
        return self._real_parts(getattr(self, "weight_hh" + sfx))

    def _real_parts(self, B: Tensor) -> Tensor:
        return torch.stack([B.real, B.imag]) if self.unitary else B

    # the real tensors B is computed from, for the ONNX export (exporting.sources): recorded at
    # construction, by every eager forward, by .to() / .double() (which replace buffers) and by
    # load_state_dict (assign=True replaces parameters: what an unpickled layer went through)
    def _record_export_sources(self) -> None:
        self._export_sources = {
            sfx: exporting.sources(self.parametrizations["weight_hh" + sfx]) for sfx in self._suffixes
        }

    def _build(self, learn_mu: bool, learn_epsilon: bool, device: Device, dtype: torch.dtype | None) -> None:
        super()._build(learn_mu, learn_epsilon, device, dtype)
        self._record_export_sources()
        self.register_load_state_dict_post_hook(_sources_after_load)

    def _apply(self, fn: Callable[[Tensor], Tensor], *args: Any, **kwargs: Any) -> ModReLUBase:
        out = super()._apply(fn, *args, **kwargs)
        self._record_export_sources()
        return out

    def _direction(self, layer: int, direction: int) -> ModReLUParams:
        sfx = f"_l{layer}" + ("_reverse" if direction == 1 else "")
        return ModReLUParams(
            self._input_weight(layer, sfx),
            self._recurrent_weight(sfx),
            getattr(self, "modrelu_bias" + sfx),
            self.unitary,
        )

    def _literal_step(
        self, p: ModReLUParams, x: Tensor, hidden: Hidden, mom: MomentumState, hp: HyperParameters
    ) -> StepResult:
        return modrelu_step(p, x, hidden, mom, self.scheme, hp)

    def _real_step(self, p: ModReLUParams) -> RealStep:
        return real_modrelu_step(p, self.scheme)

    def _repr_common(self) -> str:
        s = f", num_layers={self.num_layers}" if self.num_layers != 1 else ""
        return s + self._repr_layout() + f", scheme={self.scheme}" + self._repr_learned()


def _sources_after_load(layer: ModReLUBase, incompatible_keys: Any) -> None:
    layer._record_export_sources()
