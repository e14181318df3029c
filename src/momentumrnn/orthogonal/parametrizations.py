"""Parametrizations of orthogonal / unitary recurrent matrices for ``torch.nn.utils.parametrize``.

Every parametrization maps an unconstrained real ``n x n`` tensor ``P`` (the ``original`` that the
optimizer updates, trained with its own learning rate ``lr_orth``) to the recurrent matrix ``B``:

===========================  ==========================================  =====================
name (aliases)               ``B``                                       paper
===========================  ==========================================  =====================
``expm`` (``exprnn``)        ``expm(A)``                                 expRNN (Lezcano 2019)
``dtriv``                    ``base @ expm(A)``; every ``K`` optimizer    DTRIV (Lezcano 2019)
                             steps ``base <- B, P <- 0`` (``K = inf``:
                             never after the initial one)
``scaled_cayley``            ``(I + A)^-1 (I - A) D``, ``D`` a fixed      scoRNN (Helfrich 2018)
(``scornn``, ``cayley``)     ±1 diagonal with ``num_negative`` entries
                             ``-1`` (the last ones)
``unitary_scaled_cayley``    ``(I + A)^-1 (I - A) D``, ``A`` skew-        scuRNN (Maduranga
(``scurnn``)                 Hermitian, ``D = diag(exp(i theta))`` with   2019)
                             a trainable ``theta``
===========================  ==========================================  =====================

``A`` is read from ``P``: the skew-symmetric ``triu(P, 1) - triu(P, 1)^T`` for the real maps; for
the unitary map ``A = X + iY`` with ``X`` that skew-symmetric part and ``Y`` the symmetric matrix
whose lower triangle (diagonal included) is ``tril(P)`` -- so the ``n^2`` real entries of ``P``
are exactly the ``n^2`` real dimensions of the skew-Hermitian matrices.

``B`` is evaluated once per access (once per forward of a layer); the recurrence never
re-evaluates it per time step.
"""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from torch.types import Device

__all__ = [
    "PARAMETRIZATIONS",
    "OrthogonalParametrization",
    "Expm",
    "DynamicExpm",
    "ScaledCayley",
    "UnitaryScaledCayley",
    "ComplexView",
    "skew",
    "skew_hermitian",
    "pade_expm",
    "expm_map",
    "canonical_parametrization",
    "check_K",
    "orthogonality_error",
]

_ALIASES = {
    "expm": "expm",
    "exp": "expm",
    "exprnn": "expm",
    "dtriv": "dtriv",
    "dynamic_expm": "dtriv",
    "dynamic": "dtriv",
    "scaled_cayley": "scaled_cayley",
    "cayley": "scaled_cayley",
    "scornn": "scaled_cayley",
    "unitary_scaled_cayley": "unitary_scaled_cayley",
    "unitary_cayley": "unitary_scaled_cayley",
    "scurnn": "unitary_scaled_cayley",
}


def canonical_parametrization(name: str) -> str:
    """The canonical name of a parametrization (``expm``, ``dtriv``, ``scaled_cayley``,
    ``unitary_scaled_cayley``); host names (``exprnn``, ``scornn``, ``scurnn``) are accepted."""
    if not isinstance(name, str):
        raise TypeError(f"parametrization must be a string, got {type(name).__name__}")
    key = name.lower().replace("-", "_")
    if key not in _ALIASES:
        raise ValueError(
            f"unknown parametrization {name!r}; expected one of {', '.join(PARAMETRIZATIONS)} "
            f"(or a host name: exprnn, dtriv, scornn, scurnn)"
        )
    return _ALIASES[key]


def check_K(K: int | float | str) -> int | float:
    """``K`` of the dynamic trivialization: a positive int, or ``inf`` (``math.inf``, ``"inf"``,
    ``"infty"``). Returns an int or ``math.inf``."""
    if isinstance(K, str) and K.lower() in ("inf", "infty", "infinity"):
        return math.inf
    if isinstance(K, float) and math.inf == K:
        return math.inf
    if isinstance(K, bool) or not isinstance(K, numbers.Integral):
        raise TypeError(
            f"K (steps between base changes of the dynamic trivialization) must be a positive int or inf, got {K!r}"
        )
    if K <= 0:
        raise ValueError(
            f"K (steps between base changes of the dynamic trivialization) must be a positive int or inf, got {K}"
        )
    return int(K)


def skew(P: Tensor) -> Tensor:
    """``triu(P, 1) - triu(P, 1)^T``: the skew-symmetric matrix read from ``P``."""
    U = P.triu(1)
    return U - U.mT


def skew_hermitian(P: Tensor) -> Tensor:
    """``X + iY``: ``X = skew(P)``, ``Y`` symmetric with lower triangle ``tril(P)``."""
    L = P.tril()
    return torch.complex(skew(P), L + L.tril(-1).mT)


def _eye_like(P: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    return torch.eye(P.shape[-1], dtype=dtype or P.dtype, device=P.device)


# Pade [13/13] scaling and squaring (Higham 2005, "The scaling and squaring method for the matrix
# exponential revisited"). For a skew-symmetric X the diagonal Pade approximant q(X)^-1 q(-X)...
# is orthogonal, so B is orthogonal up to rounding whatever the degree.
_PADE13 = (
    64764752532480000.0,
    32382376266240000.0,
    7771770303897600.0,
    1187353796428800.0,
    129060195264000.0,
    10559470521600.0,
    670442572800.0,
    33522128640.0,
    1323241920.0,
    40840800.0,
    960960.0,
    16380.0,
    182.0,
    1.0,
)
_THETA13 = 5.371920351148152


def pade_expm(A: Tensor) -> Tensor:
    """``expm(A)`` by Pade [13/13] scaling and squaring, as differentiable tensor operations."""
    norm = float(A.detach().abs().sum(-2).max()) if A.numel() else 0.0
    # (a non-finite norm skips the scaling: the result is then non-finite too, like the input)
    s = max(0, math.ceil(math.log2(norm / _THETA13))) if _THETA13 < norm < math.inf else 0
    X = A * (0.5**s) if s else A
    b = _PADE13
    eye = _eye_like(A)
    X2 = X @ X
    X4 = X2 @ X2
    X6 = X4 @ X2
    U = X @ (X6 @ (b[13] * X6 + b[11] * X4 + b[9] * X2) + b[7] * X6 + b[5] * X4 + b[3] * X2 + b[1] * eye)
    V = X6 @ (b[12] * X6 + b[10] * X4 + b[8] * X2) + b[6] * X6 + b[4] * X4 + b[2] * X2 + b[0] * eye
    R = torch.linalg.solve(V - U, V + U)
    for _ in range(s):
        R = R @ R
    return R


def _expm_value(A: Tensor, base: Tensor | None) -> Tensor:
    """``base @ expm(A)`` computed in float64, rounded to ``A``'s dtype."""
    wide = torch.float64
    B = pade_expm(A.to(wide))
    if base is not None:
        B = base.to(wide) @ B
    return B.to(A.dtype)


# ``base @ expm(A)`` as a custom operator (its scaling count depends on the values of A: one opaque
# node for torch.compile / torch.export, run eagerly): the value in float64 (orthogonal to the
# last bit of the parameter dtype), the gradient (the adjoint Frechet derivative, as the
# vector-Jacobian product of the Pade approximant) in the parameter dtype (float32 for half
# precision, where torch has no LU); the double backward differentiates the float64 value.
@torch.library.custom_op("momentumrnn::expm_map", mutates_args=())
def _expm_op(A: Tensor, base: Tensor | None) -> Tensor:
    with torch.autocast(A.device.type, enabled=False):  # (autocast may be on in the caller's thread)
        return _expm_value(A, base).contiguous()


@_expm_op.register_fake
def _(A: Tensor, base: Tensor | None) -> Tensor:
    return A.new_empty(A.shape)


# The dispatcher runs a custom operator's implementation with autograd switched off (its keys
# excluded thread-locally); the VJP below differentiates the Pade approximant with autograd, so it
# runs with the thread-local dispatch state of plain eager code, as captured at import.
_EAGER_DISPATCH = (torch._C._dispatch_tls_local_include_set(), torch._C._dispatch_tls_local_exclude_set())


@torch.library.custom_op("momentumrnn::expm_map_backward", mutates_args=())
def _expm_backward_op(A: Tensor, base: Tensor | None, G: Tensor) -> Tensor:
    if base is not None:
        G = base.mT @ G
    work = torch.float32 if A.dtype in (torch.float16, torch.bfloat16) else A.dtype
    with (
        torch._C._ForceDispatchKeyGuard(*_EAGER_DISPATCH),
        torch.enable_grad(),
        torch.autocast(A.device.type, enabled=False),
    ):
        A_ = A.detach().to(work).requires_grad_(True)
        (dA,) = torch.autograd.grad(pade_expm(A_), A_, G.to(work))
    return dA.to(A.dtype).contiguous()


@_expm_backward_op.register_fake
def _(A: Tensor, base: Tensor | None, G: Tensor) -> Tensor:
    return A.new_empty(A.shape)


def _expm_setup(ctx: Any, inputs: tuple[Tensor, Tensor | None], output: Tensor) -> None:
    ctx.save_for_backward(*inputs)


def _expm_backward(ctx: Any, G: Tensor | None) -> tuple[Tensor | None, None]:
    A, base = ctx.saved_tensors
    if G is None or not ctx.needs_input_grad[0]:
        return None, None
    if torch.is_grad_enabled():  # create_graph / torch.func: a differentiable backward
        with torch.enable_grad(), torch.autocast(A.device.type, enabled=False):
            (dA,) = torch.autograd.grad(_expm_value(A, base), A, G, create_graph=True)
        return dA, None
    return _expm_backward_op(A, base, G), None


_expm_op.register_autograd(_expm_backward, setup_context=_expm_setup)


class _ExpmMap(torch.autograd.Function):
    @staticmethod
    def forward(A: Tensor, base: Tensor | None) -> Tensor:
        return _expm_op(A, base)

    setup_context = staticmethod(_expm_setup)
    backward = staticmethod(_expm_backward)


def expm_map(A: Tensor, base: Tensor | None = None) -> Tensor:
    """``base @ expm(A)`` (``base`` optional, not differentiated)."""
    base = None if base is None else base.detach()
    return _expm_op(A, base) if torch.jit.is_tracing() else _ExpmMap.apply(A, base)


_COMPLEX = {torch.float64: torch.complex128, torch.float32: torch.complex64, torch.float16: torch.complex32}


def complex_dtype(dtype: torch.dtype) -> torch.dtype:
    """The complex dtype whose parts are ``dtype``."""
    if dtype not in _COMPLEX:
        raise TypeError(f"complex (unitary) hosts need float16, float32 or float64 parameters, got {dtype}")
    return _COMPLEX[dtype]


def orthogonality_error(B: Tensor) -> float:
    """``max |B^H B - I|`` (0 for an exactly orthogonal / unitary matrix)."""
    B = B.detach()
    return float((B.mH @ B - _eye_like(B)).abs().max())


class OrthogonalParametrization(nn.Module):
    """Base of the recurrent-matrix parametrizations: shape checks and the ``right_inverse`` used
    when a matrix is assigned (``layer.weight_hh_l0 = B``)."""

    name = ""
    unitary = False
    #: tolerance of ``max |B^H B - I|`` accepted by ``right_inverse``
    assign_tolerance: ClassVar[dict[torch.dtype, float]] = {
        torch.float16: 1e-2,
        torch.bfloat16: 1e-2,
        torch.float32: 1e-4,
        torch.float64: 1e-8,
    }

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = int(n)
        # ``register_parametrization`` calls ``right_inverse`` on the tensor being registered (the
        # unconstrained ``P`` itself): raising NotImplementedError there keeps it as is.
        self._registered = False

    def extra_repr(self) -> str:
        return f"n={self.n}"

    def _check_original(self, P: Tensor) -> None:
        if P.dim() != 2 or P.shape[0] != P.shape[1]:
            raise ValueError(
                f"{self.name}: the unconstrained recurrent parameter must be a square matrix, "
                f"got shape {tuple(P.shape)}"
            )
        if P.shape[0] != self.n:
            raise ValueError(
                f"{self.name}: the recurrent parameter must be {self.n} x {self.n}, got {P.shape[0]} x {P.shape[1]}"
            )

    def _check_assigned(self, B: Tensor) -> None:
        if not isinstance(B, Tensor):
            raise TypeError(f"the recurrent matrix must be a tensor, got {type(B).__name__}")
        if B.dim() != 2 or B.shape[0] != B.shape[1]:
            raise ValueError(f"the recurrent matrix must be square ({self.n} x {self.n}), got shape {tuple(B.shape)}")
        if B.shape[0] != self.n:
            raise ValueError(f"the recurrent matrix must be {self.n} x {self.n}, got {B.shape[0]} x {B.shape[1]}")
        if self.unitary and not B.is_complex():
            raise TypeError(f"{self.name} expects a complex (unitary) recurrent matrix, got dtype {B.dtype}")
        if not self.unitary and B.is_complex():
            raise TypeError(f"{self.name} expects a real (orthogonal) recurrent matrix, got complex dtype {B.dtype}")
        real = B.real.dtype if B.is_complex() else B.dtype
        err = orthogonality_error(B)
        if not err <= self.assign_tolerance.get(real, 1e-4):
            kind = "unitary" if self.unitary else "orthogonal"
            raise ValueError(f"the recurrent matrix must be {kind}: max |B^H B - I| = {err:.3g}")

    def right_inverse(self, B: Tensor) -> Tensor:
        if not self._registered:
            raise NotImplementedError  # registration: keep the given unconstrained tensor
        self._check_assigned(B)
        return self._inverse(B)

    def _inverse(self, B: Tensor) -> Tensor:
        raise NotImplementedError(
            f"the {self.name} parametrization cannot be assigned a matrix (no matrix logarithm in torch); "
            "use the 'dtriv' parametrization, or set the skew parameter "
            "(layer.parametrizations.weight_hh_l0.original) directly"
        )

    def init_from_skew_(self, P: Tensor, S: Tensor) -> None:
        """Write the skew-symmetric matrix ``S`` (from an initializer) into ``P``."""
        with torch.no_grad():
            P.copy_(S)


class Expm(OrthogonalParametrization):
    """``B = expm(A)`` (expRNN)."""

    name = "expm"

    def forward(self, P: Tensor) -> Tensor:
        self._check_original(P)
        return expm_map(skew(P))


def _polish(B: Tensor) -> Tensor:
    """One Newton-Schulz step towards the nearest orthogonal matrix: quadratic convergence, keeps
    ``B`` orthogonal to machine precision across many base changes."""
    return B @ (1.5 * _eye_like(B) - 0.5 * (B.mT @ B))


class DynamicExpm(Expm):
    """``B = base @ expm(A)`` with dynamic trivialization (DTRIV): every ``K`` optimizer steps the
    base becomes the current ``B`` and ``P`` is reset to 0 (same ``B``, new chart); ``K = inf``
    keeps the base chosen at initialization. Call :meth:`optimizer_step` after every optimizer
    step (the layers' ``on_optimizer_step`` and :class:`~momentumrnn.DynamicTrivialization`
    do)."""

    name = "dtriv"

    base: Tensor
    steps: Tensor
    base_changes: Tensor

    def __init__(
        self, n: int, K: int | float | str = 100, device: Device = None, dtype: torch.dtype | None = None
    ) -> None:
        super().__init__(n)
        self.K = check_K(K)
        self.register_buffer("base", torch.eye(n, device=device, dtype=dtype))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long, device=device))
        self.register_buffer("base_changes", torch.zeros((), dtype=torch.long, device=device))

    def extra_repr(self) -> str:
        return f"n={self.n}, K={self.K}"

    def forward(self, P: Tensor) -> Tensor:
        self._check_original(P)
        return expm_map(skew(P), self.base)

    def change_base_(self, P: Tensor) -> None:
        """``base <- base @ expm(A(P))`` (computed in float64 and polished), ``P <- 0``."""
        with torch.no_grad():
            wide = torch.float64 if self.base.dtype != torch.float64 else self.base.dtype
            B = self.base.to(wide) @ pade_expm(skew(P.to(wide)))
            self.base.copy_(_polish(B))
            P.zero_()
            self.base_changes += 1

    def optimizer_step(self, P: Tensor) -> bool:
        """Count one optimizer step; change the base every ``K`` steps. Returns whether it did."""
        self.steps += 1
        if math.inf != self.K and int(self.steps) % self.K == 0:
            self.change_base_(P)
            return True
        return False

    def _inverse(self, B: Tensor) -> Tensor:
        self.base.copy_(B)
        return torch.zeros_like(B)

    def init_from_skew_(self, P: Tensor, S: Tensor) -> None:
        # The authors' first base change happens at the first evaluation: base = expm(S), P = 0.
        with torch.no_grad():
            P.copy_(S)
            self.base.copy_(torch.eye(self.n, dtype=self.base.dtype, device=self.base.device))
            self.change_base_(P)
            self.base_changes.zero_()
            self.steps.zero_()


class ScaledCayley(OrthogonalParametrization):
    """``B = (I + A)^-1 (I - A) D`` with a fixed diagonal ``D`` of ``n - num_negative`` ones then
    ``num_negative`` minus ones (scoRNN)."""

    name = "scaled_cayley"

    D: Tensor

    def __init__(
        self,
        n: int,
        num_negative: int = 0,
        device: Device = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(n)
        if isinstance(num_negative, bool) or not isinstance(num_negative, numbers.Integral):
            raise TypeError(
                f"num_negative (number of -1 entries of the scaling matrix D) must be an int, got {num_negative!r}"
            )
        if not 0 <= num_negative <= n:
            raise ValueError(f"num_negative must be in [0, hidden_size = {n}], got {num_negative}")
        self.num_negative: int = int(num_negative)
        D = torch.ones(n, device=device, dtype=dtype)
        D[n - self.num_negative :] = -1
        self.register_buffer("D", D)

    def extra_repr(self) -> str:
        return f"n={self.n}, num_negative={self.num_negative}"

    def forward(self, P: Tensor) -> Tensor:
        self._check_original(P)
        A = skew(P.to(torch.float64))  # solved in float64: orthogonal to the last bit of P's dtype
        eye = _eye_like(A)
        return (torch.linalg.solve(eye + A, eye - A) * self.D).to(P.dtype)

    def _inverse(self, B: Tensor) -> Tensor:
        M = B * self.D  # B D^-1 (D = D^-1)
        eye = _eye_like(M)
        try:
            return torch.linalg.solve(eye + M, eye - M)
        except RuntimeError:
            raise ValueError(
                "B D^-1 has the eigenvalue -1, so it has no scaled Cayley preimage with this D; "
                "choose another num_negative"
            ) from None


class UnitaryScaledCayley(OrthogonalParametrization):
    """``B = (I + A)^-1 (I - A) diag(exp(i theta))``, ``A`` skew-Hermitian, ``theta`` trainable
    (scuRNN). ``theta`` is initialised uniform in ``[0, 2 pi)`` as in the authors' code."""

    name = "unitary_scaled_cayley"
    unitary = True

    def __init__(self, n: int, device: Device = None, dtype: torch.dtype | None = None) -> None:
        super().__init__(n)
        self.theta = nn.Parameter(torch.empty(n, device=device, dtype=dtype))
        with torch.no_grad():
            self.theta.uniform_(0.0, 2 * math.pi)

    def diagonal(self) -> Tensor:
        return torch.polar(torch.ones_like(self.theta), self.theta)

    def forward(self, P: Tensor) -> Tensor:
        self._check_original(P)
        A = skew_hermitian(P.to(torch.float64))  # solved in complex128, then rounded
        eye = _eye_like(A)
        out = torch.linalg.solve(eye + A, eye - A) * self.diagonal().to(A.dtype)
        return out.to(complex_dtype(P.dtype))

    def _inverse(self, B: Tensor) -> Tensor:
        M = B * self.diagonal().conj()
        eye = _eye_like(M)
        try:
            A = torch.linalg.solve(eye + M, eye - M)
        except RuntimeError:
            raise ValueError(
                "B D^-1 has the eigenvalue -1, so it has no scaled Cayley preimage with this theta; change theta first"
            ) from None
        return A.real.triu(1) + A.imag.tril()

    def init_from_skew_(self, P: Tensor, S: Tensor) -> None:
        # A real skew-symmetric S is the skew-Hermitian S + 0i: upper triangle only.
        with torch.no_grad():
            P.copy_(S.triu(1))


class ComplexView(nn.Module):
    """A complex matrix stored as a real ``(..., 2)`` tensor (so that ``.to(dtype)``, optimizers
    and gradient clipping see real parameters)."""

    def __init__(self) -> None:
        super().__init__()
        self._registered = False

    def forward(self, X: Tensor) -> Tensor:
        return torch.view_as_complex(X)

    def right_inverse(self, W: Tensor) -> Tensor:
        if not self._registered:
            raise NotImplementedError
        if not isinstance(W, Tensor) or not W.is_complex():
            raise TypeError(f"expected a complex tensor, got {getattr(W, 'dtype', type(W).__name__)}")
        return torch.view_as_real(W).clone()


#: parametrization name -> its class
PARAMETRIZATIONS = {
    "expm": Expm,
    "dtriv": DynamicExpm,
    "scaled_cayley": ScaledCayley,
    "unitary_scaled_cayley": UnitaryScaledCayley,
}


def make_parametrization(
    name: str,
    n: int,
    *,
    K: int | float | str | None = None,
    num_negative: int | None = None,
    device: Device = None,
    dtype: torch.dtype | None = None,
) -> OrthogonalParametrization:
    """Instantiate a parametrization by name, checking that the options fit it."""
    name = canonical_parametrization(name)
    if K is not None and name != "dtriv":
        raise ValueError(f"K (dynamic trivialization) applies to the 'dtriv' parametrization only, not {name!r}")
    if num_negative is not None and name != "scaled_cayley":
        raise ValueError(f"num_negative applies to the 'scaled_cayley' (scoRNN) parametrization only, not {name!r}")
    if name == "expm":
        return Expm(n)
    if name == "dtriv":
        return DynamicExpm(n, 100 if K is None else K, device=device, dtype=dtype)
    if name == "scaled_cayley":
        return ScaledCayley(n, n // 10 if num_negative is None else num_negative, device=device, dtype=dtype)
    return UnitaryScaledCayley(n, device=device, dtype=dtype)


def register(module: nn.Module, tensor_name: str, parametrization: nn.Module) -> None:
    """``register_parametrization`` keeping the registered tensor as the ``original`` (and allowing
    a dtype change, e.g. real ``P`` to complex ``B``)."""
    from torch.nn.utils import parametrize

    parametrize.register_parametrization(module, tensor_name, parametrization, unsafe=True)
    parametrization._registered = True  # type: ignore[assignment]  # our flag on a Module (not a tensor)
