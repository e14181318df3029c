"""ENRNN: the eigenvalue-normalized RNN (Helfrich & Ye, AAAI 2020), exact to the authors' code
(docs/equations.md, section 3).

The hidden state ``h = [h1 | h2]`` has a long-term part ``h1`` (``n1 = hidden_size - short_size``
units) and a short-term part ``h2`` (``n2 = short_size``); in the row convention of the modReLU
hosts ``h_t = modReLU(h_{t-1} B + d_t)`` with

    B = [[W1, 0    ],        h B = [h1 W1 + h2 W3, h2 W2bar]
         [W3, W2bar]]

* ``W1`` (``n1 x n1``): scoRNN's scaled Cayley matrix ``(I + A)^-1 (I - A) D``, ``D`` with
  ``num_negative`` entries ``-1`` (the last ones); eigenvalues on the unit circle.
* ``W3`` (``n2 x n1``): dense, so the short-term part feeds the long-term one, never the reverse
  (``coupled=False`` drops it).
* ``W2bar = W2 / rho(W2)`` (``rho`` the spectral radius) from the first optimizer step after which
  ``rho(W2) > 1`` on, a latch kept in a buffer (saved in the state dict); before that
  ``W2bar = W2``. Either way ``rho(W2bar) <= 1``: the short-term part forgets. The gradient
  through ``rho`` is the exact chain rule of the authors' ``EN_Deriv``:
  ``dL/dW2 = (1/rho) [G - (1/rho) <G, W2bar> (alpha Re P + beta Im P)]`` with
  ``lambda = alpha + i beta`` the top eigenvalue and ``P = conj(y) x^T / (y^H x)`` from its left and
  right eigenvectors (:class:`SpectralRadius`).

``weight_hh_l0`` evaluates to the full ``B``; its parameters are ``original0`` (the skew
parameter of ``W1``, trained with ``lr_orth`` as the authors' ``A``), ``original1`` (``W2``) and
``original2`` (``W3``), under ``parametrizations.weight_hh_l0``. Call ``on_optimizer_step()``
after every optimizer step (the latch; the toolkit does).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import Tensor, nn

from .. import _checks, registry
from ..orthogonal.initializers import block_diagonal_skew_
from ..orthogonal.parametrizations import ScaledCayley, register
from ..schemes import SchemeSpec
from .modrelu import ModReLUBase

if TYPE_CHECKING:
    from torch.types import Device

    from .._typing import Factory

__all__ = ["EigenvalueNormalizedRNN", "ENRNNMatrix", "SpectralRadius", "spectral_radius"]

registry.register_host("enrnn", "ENRNN", "modrelu", "ENRNN: B = [[W1, 0], [W3, W2 / rho(W2)]], Helfrich & Ye 2020")


def _top_eigen(M: Tensor) -> tuple[Tensor, Tensor]:
    """``(rho, grad)``: the spectral radius of ``M`` and its gradient, in float64."""
    Md = M.detach().to(torch.float64)
    lam, X = torch.linalg.eig(Md)
    i = int(torch.argmax(lam.abs()))
    W = torch.linalg.inv(X)
    P = torch.outer(W[i], X[:, i])  # conj(y) x^T / (y^H x)
    rho = lam[i].abs()
    return rho, (lam[i].conj() * P).real / rho


# The spectral radius as a custom operator (an eigen-decomposition and a data-dependent choice of
# the top eigenvalue: one opaque node for torch.compile / torch.export): ``(rho, its gradient)``.
@torch.library.custom_op("momentumrnn::spectral_radius", mutates_args=())
def _spectral_radius_op(M: Tensor) -> tuple[Tensor, Tensor]:
    with torch.autocast(M.device.type, enabled=False):  # (autocast may be on in the caller's thread)
        rho, grad = _top_eigen(M)
    return rho.to(M.dtype), grad.to(M.dtype).contiguous()


@_spectral_radius_op.register_fake
def _(M: Tensor) -> tuple[Tensor, Tensor]:
    return M.new_empty(()), M.new_empty(M.shape)


def _radius_setup(ctx: Any, inputs: tuple[Tensor], output: tuple[Tensor, Tensor]) -> None:
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(inputs[0], output[1])


def _radius_backward(ctx: Any, g: Tensor | None, _: Tensor | None) -> Tensor | None:
    M, grad = ctx.saved_tensors
    if g is None:
        return None
    if torch.is_grad_enabled():
        # A differentiable backward (create_graph, torch.func): the radius through
        # torch.linalg.eig's own derivatives (exact for a simple top eigenvalue or pair).
        with torch.enable_grad(), torch.autocast(M.device.type, enabled=False):
            lam = torch.linalg.eigvals(M.to(torch.float64))
            rho = lam.abs().max().to(M.dtype)
            (dM,) = torch.autograd.grad(rho, M, g, create_graph=True)
        return dM
    return g * grad


_spectral_radius_op.register_autograd(_radius_backward, setup_context=_radius_setup)


class SpectralRadius(torch.autograd.Function):
    """``rho(M) = max |lambda_i(M)|`` of a real square matrix with the exact gradient
    ``Re(conj(lambda) P) / |lambda|``, ``P = w x^T`` (``x`` the right eigenvector of the top
    eigenvalue, ``w^T`` the matching row of ``X^-1``, i.e. the left eigenvector scaled so that
    ``w^T x = 1``). Computed in float64. Assumes the top eigenvalue (or conjugate pair) is simple,
    as the authors' formula does. Runs as the custom operator ``momentumrnn::spectral_radius``."""

    @staticmethod
    def forward(M: Tensor) -> tuple[Tensor, Tensor]:
        return _spectral_radius_op(M)

    setup_context = staticmethod(_radius_setup)
    backward = staticmethod(_radius_backward)


def spectral_radius(M: Tensor) -> Tensor:
    """The spectral radius of ``M``, differentiable (:class:`SpectralRadius`)."""
    return (_spectral_radius_op(M) if torch.jit.is_tracing() else SpectralRadius.apply(M))[0]


class ENRNNMatrix(nn.Module):
    """``B`` of ENRNN from its originals ``(P1, W2[, W3])`` (a parametrization with several
    originals; see the module docstring)."""

    normalized: Tensor

    def __init__(
        self,
        long_size: int,
        short_size: int,
        num_negative: int,
        coupled: bool = True,
        device: Device = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.n1, self.n2, self.coupled = int(long_size), int(short_size), bool(coupled)
        self.cayley = ScaledCayley(self.n1, num_negative, device=device, dtype=dtype)
        self.register_buffer("normalized", torch.zeros((), dtype=torch.bool, device=device))
        # the latch as a Python bool too, for traced calls (torch.compile / torch.export /
        # jit.trace read it instead of the buffer's value); refreshed by every eager call, the
        # latch itself, reset_parameters and load_state_dict
        self._latched = False
        self._registered = False

    @property
    def num_negative(self) -> int:
        return self.cayley.num_negative

    def extra_repr(self) -> str:
        return f"n1={self.n1}, n2={self.n2}, num_negative={self.num_negative}, coupled={self.coupled}"

    def latched(self) -> bool:
        """Whether the eigenvalue normalization of ``W2`` is on."""
        if not (torch.compiler.is_compiling() or torch.jit.is_tracing()):
            self._latched = bool(self.normalized)
        return self._latched

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._latched = bool(self.normalized)

    def short_matrix(self, W2: Tensor) -> Tensor:
        """``W2bar``: ``W2 / rho(W2)`` once the latch is on, else ``W2``."""
        return W2 / spectral_radius(W2) if self.latched() else W2

    def forward(self, P1: Tensor, W2: Tensor, W3: Tensor | None = None) -> Tensor:
        W1 = self.cayley(P1)
        top = torch.cat([W1, W1.new_zeros(self.n1, self.n2)], 1)
        low = torch.cat([W3 if W3 is not None else W1.new_zeros(self.n2, self.n1), self.short_matrix(W2)], 1)
        return torch.cat([top, low], 0)

    def right_inverse(self, B: Tensor) -> tuple[Tensor, ...]:
        if self._registered:
            raise NotImplementedError(
                "ENRNN's recurrent matrix cannot be assigned; set its originals instead "
                "(layer.parametrizations.weight_hh_l0.original0 / original1 / original2)"
            )
        shapes = [(self.n1, self.n1), (self.n2, self.n2)] + ([(self.n2, self.n1)] if self.coupled else [])
        return tuple(B.new_zeros(s) for s in shapes)

    @torch.no_grad()
    def update_latch(self, W2: Tensor) -> bool:
        """After an optimizer step: the latch goes (and stays) on once ``rho(W2) > 1``."""
        if not bool(self.normalized) and float(spectral_radius(W2.detach())) > 1.0:
            self.normalized.fill_(True)
        self._latched = bool(self.normalized)
        return self._latched


def _rotation_skew_(A: Tensor) -> Tensor:
    """The authors' skew initialisation of ENRNN: ``+tan(s/2)`` at ``A[2k, 2k+1]`` (``-`` below),
    ``s ~ U(0, pi/2)``."""
    s = torch.rand(A.shape[0] // 2, dtype=torch.float64) * (math.pi / 2)
    return block_diagonal_skew_(A, torch.sqrt((1 - torch.cos(s)) / (1 + torch.cos(s))))


class EigenvalueNormalizedRNN(ModReLUBase):
    """ENRNN with a momentum scheme: the modReLU host of Helfrich & Ye (2020) (module docstring).

    Args:
        input_size, hidden_size, num_layers, batch_first, dropout, bidirectional, device, dtype:
            as in ``torch.nn.RNN``; ``hidden_size = n1 + n2``.
        bias: must be False (no input bias; the modReLU bias is learned).
        short_size: ``n2``, the size of the short-term part ``h2`` (default ``hidden_size // 4``).
        num_negative: ``-1`` entries of ``W1``'s scaling ``D`` (default ``round(0.3 * n1)``,
            the authors' ratio: 29 of 96, 52 of 172).
        coupled: keep ``W3`` (the authors' setting); ``False`` drops it.
        scheme, mu, epsilon, beta, restart, learn_mu, learn_epsilon, carry_momentum: the momentum
            scheme, as for every layer (fixed by the paper-named classes ``ENRNN``,
            ``MomentumENRNN``, ...).

    Initialisation as the authors': ``W1 = Cayley(A1) D``, ``W2 = Cayley(A2) D2`` with ``A1``,
    ``A2`` 2x2-block skew (``+tan(s/2)``, ``s ~ U(0, pi/2)``) and ``D2`` entries ``U(-1, 1)``
    repeated within each block; ``W3`` Glorot-uniform; ``W_ih ~ U(-0.01, 0.01)``; modReLU bias 0.

    Inputs / outputs: as :class:`~momentumrnn.OrthogonalRNN` (real state).
    """

    host = "enrnn"
    _generic = "EigenvalueNormalizedRNN"

    short_size: int
    long_size: int
    num_negative: int
    coupled: bool

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = False,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device: Device = None,
        dtype: torch.dtype | None = None,
        *,
        short_size: int | None = None,
        num_negative: int | None = None,
        coupled: bool = True,
        scheme: str | None = None,
        mu: float | None = None,
        epsilon: float | None = None,
        beta: float | None = None,
        restart: int | None = None,
        learn_mu: bool = False,
        learn_epsilon: bool = False,
        carry_momentum: bool = False,
    ) -> None:
        super().__init__()
        self._setup(
            input_size,
            hidden_size,
            num_layers,
            batch_first,
            dropout,
            bidirectional,
            scheme,
            mu,
            epsilon,
            beta,
            restart,
            carry_momentum,
        )
        self._setup_modrelu(bias, dtype, False)
        H = self.hidden_size
        if H < 2:
            raise ValueError(f"ENRNN needs hidden_size >= 2 (a long and a short part), got {H}")
        n2 = H // 4 if short_size is None else _checks.check_size("short_size", short_size)
        n2 = max(n2, 1)
        if n2 >= H:
            raise ValueError(
                f"short_size must be less than hidden_size = {H} (n1 = hidden_size - short_size "
                f"long-term units), got {short_size}"
            )
        self.short_size, self.long_size = n2, H - n2
        if num_negative is None:
            num_negative = round(0.3 * self.long_size)
        if isinstance(num_negative, bool) or not isinstance(num_negative, int):
            raise TypeError(
                f"num_negative (number of -1 entries of W1's scaling D) must be an int, got {num_negative!r}"
            )
        if not 0 <= num_negative <= self.long_size:
            raise ValueError(f"num_negative must be in [0, n1 = {self.long_size}], got {num_negative}")
        self.num_negative = num_negative
        self.coupled = bool(coupled)
        self._build(learn_mu, learn_epsilon, device, dtype)

    @classmethod
    def _class_doc(cls, spec: SchemeSpec) -> str:
        return (
            f"{registry.paper_name(cls.host, spec.kind)}: {spec.summary} on ENRNN.\n\n    Same arguments as "
            ":class:`EigenvalueNormalizedRNN` without ``scheme``.\n"
            + cast(str, EigenvalueNormalizedRNN.__doc__).split("\n", 1)[1]
        )

    def _register_direction(self, sfx: str, in_features: int, factory: Factory) -> None:
        H = self.hidden_size
        self.register_parameter("weight_ih" + sfx, nn.Parameter(torch.empty(H, in_features, **factory)))
        self.register_parameter("weight_hh" + sfx, nn.Parameter(torch.zeros(H, H, **factory)))
        param = ENRNNMatrix(self.long_size, self.short_size, self.num_negative, self.coupled, **factory)
        register(self, "weight_hh" + sfx, param)
        self.register_parameter("modrelu_bias" + sfx, nn.Parameter(torch.empty(H, **factory)))

    def _matrix(self, sfx: str) -> ENRNNMatrix:
        return cast(ENRNNMatrix, self.parametrizations["weight_hh" + sfx][0])

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The authors' initialisation (class docstring); the latch starts off."""
        n1, n2 = self.long_size, self.short_size
        for sfx in self._suffixes:
            getattr(self, "weight_ih" + sfx).uniform_(-0.01, 0.01)
            getattr(self, "modrelu_bias" + sfx).zero_()
            plist = self.parametrizations["weight_hh" + sfx]
            matrix = self._matrix(sfx)
            matrix.normalized.fill_(False)
            matrix._latched = False
            A1 = _rotation_skew_(torch.zeros(n1, n1, dtype=torch.float64))
            cast(Tensor, plist.original0).copy_(A1.triu(1))
            A2 = _rotation_skew_(torch.zeros(n2, n2, dtype=torch.float64))
            d = torch.rand((n2 + 1) // 2, dtype=torch.float64) * 2 - 1  # one scale per 2x2 block
            D2 = d.repeat_interleave(2)[:n2]
            eye = torch.eye(n2, dtype=torch.float64)
            cast(Tensor, plist.original1).copy_(torch.linalg.solve(eye + A2, eye - A2) * D2)
            if self.coupled:
                bound = math.sqrt(6.0 / (n1 + n2))
                cast(Tensor, plist.original2).uniform_(-bound, bound)

    def orthogonal_parameters(self) -> list[Tensor]:
        """The skew parameters of ``W1`` (the authors train them with their own learning rate);
        ``W2`` and ``W3`` take the general one."""
        return [cast(Tensor, self.parametrizations["weight_hh" + sfx].original0) for sfx in self._suffixes]

    def on_optimizer_step(self) -> None:
        """Call after every optimizer step: switches on the eigenvalue normalization of ``W2``
        once its spectral radius exceeds 1 (then for good)."""
        for sfx in self._suffixes:
            self._matrix(sfx).update_latch(cast(Tensor, self.parametrizations["weight_hh" + sfx].original1))

    def short_term_matrix(self, layer: int = 0, direction: int = 0) -> Tensor:
        """``W2bar`` of one layer and direction (its spectral radius is at most 1)."""
        sfx = f"_l{layer}" + ("_reverse" if direction == 1 else "")
        return self._matrix(sfx).short_matrix(cast(Tensor, self.parametrizations["weight_hh" + sfx].original1))

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, short_size={self.short_size}"
        s += self._repr_common()
        s += f", num_negative={self.num_negative}"
        if not self.coupled:
            s += ", coupled=False"
        return s
