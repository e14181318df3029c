"""A literal, step-by-step reference of the modReLU hosts (orthogonal, unitary, ENRNN) with every
momentum scheme (docs/equations.md, sections 2-3).

Deliberately naive and independent of the library's fast paths: one sequence at a time, one time
step at a time, complex arithmetic for scuRNN, the recurrent matrix rebuilt from the raw
parameters with textbook formulas (a long Taylor series for the exponential, an explicit inverse
for the Cayley transforms, ``torch.linalg.eigvals`` for ENRNN's spectral radius, differentiated by
autograd). Only the layer's raw parameters, buffers and hyper-parameters are read.
"""

from __future__ import annotations

import math

import torch


def taylor_expm(A, terms: int = 30):
    """``exp(A)`` by scaling, a long Taylor series and squaring."""
    norm = float(A.detach().abs().sum(0).max())
    s = max(0, math.ceil(math.log2(norm))) + 1 if norm > 0 else 0
    X = A / 2**s
    eye = torch.eye(A.shape[0], dtype=A.dtype)
    R, term = eye, eye
    for k in range(1, terms):
        term = term @ X / k
        R = R + term
    for _ in range(s):
        R = R @ R
    return R


def recurrent_matrix(layer, sfx):
    """``B`` of one layer and direction from its raw parameters."""
    plist = layer.parametrizations["weight_hh" + sfx]
    P = plist.original0 if layer.host == "enrnn" else plist.original
    p = plist[0]
    upper = torch.triu(P, diagonal=1)
    A = upper - upper.T
    n = P.shape[0]
    eye = torch.eye(n, dtype=P.dtype)
    host = layer.host
    if host == "exprnn":
        return taylor_expm(A)
    if host == "dtriv":
        return p.base @ taylor_expm(A)
    if host == "scornn":
        return torch.linalg.inv(eye + A) @ (eye - A) @ torch.diag(p.D)
    if host == "enrnn":
        # B = [[W1, 0], [W3, W2bar]] (row convention: h B = [h1 W1 + h2 W3, h2 W2bar])
        n1, n2 = p.n1, p.n2
        U1 = torch.triu(plist.original0, diagonal=1)
        A1 = U1 - U1.T
        eye1 = torch.eye(n1, dtype=P.dtype)
        W1 = torch.linalg.inv(eye1 + A1) @ (eye1 - A1) @ torch.diag(p.cayley.D)
        W2 = plist.original1
        if bool(p.normalized):
            W2 = W2 / torch.linalg.eigvals(W2).abs().max()
        W3 = plist.original2 if p.coupled else torch.zeros(n2, n1, dtype=P.dtype)
        return torch.cat([torch.cat([W1, torch.zeros(n1, n2, dtype=P.dtype)], 1), torch.cat([W3, W2], 1)], 0)
    # scurnn: A + iY skew-Hermitian, D = diag(exp(i theta))
    lower = torch.tril(P)
    Y = lower + torch.tril(P, diagonal=-1).T
    Ac = torch.complex(A, Y)
    ceye = eye.to(Ac.dtype)
    D = torch.diag(torch.exp(1j * p.theta.to(Ac.dtype)))
    return torch.linalg.inv(ceye + Ac) @ (ceye - Ac) @ D


def modrelu(z, b):
    return torch.sgn(z) * torch.relu(torch.abs(z) + b)


def _step_counter(k: int, restart: int) -> int:
    k = k + 1
    if restart > 0 and k > restart:
        k = 1
    return k


def reference_direction(layer, layer_idx, direction, seq, h, mom):
    """One layer and direction over ``seq`` (n, I) of ONE sequence. ``h``: (H,) (complex for
    scuRNN); ``mom``: dict v, m, k. Returns (outputs (n, F), h, mom)."""
    sfx = f"_l{layer_idx}" + ("_reverse" if direction == 1 else "")
    W_ih = getattr(layer, "weight_ih" + sfx)  # complex for scuRNN
    B = recurrent_matrix(layer, sfx)
    b = getattr(layer, "modrelu_bias" + sfx)
    sch = layer.scheme
    mu, eps = layer.hyper_parameters(layer_idx, direction)
    kind, beta, F = sch.kind, sch.beta, sch.restart
    v, m, p, k = mom["v"], mom["m"], mom["p"], mom["k"]
    outs = []
    for x_t in seq:
        x = x_t.to(W_ih.dtype) if W_ih.is_complex() and not x_t.is_complex() else x_t
        u = W_ih @ x
        if kind == "none":
            d = u
        elif kind == "heavy_ball":
            v = mu * v + eps * u
            d = v
        elif kind == "adam":
            v = mu * v + eps * u
            m = beta * m + (1 - beta) * (u * u.conj()).real
            d = v / torch.sqrt(m + 1e-16)
        elif kind == "rmsprop":
            m = beta * m + (1 - beta) * (u * u.conj()).real
            d = eps * u / torch.sqrt(m + 1e-16)
        elif kind == "restart":
            k = _step_counter(k, F)
            v = (k - 1) / (k + 2) * v + eps * u
            d = v
        elif kind == "nesterov":
            k = _step_counter(k, F)
            p_new = h @ B - eps * u
            g = p_new + (k - 1) / (k + 2) * (p_new - p)
            p = p_new
        else:
            raise AssertionError(kind)
        h = modrelu(g if kind == "nesterov" else h @ B + d, b)
        outs.append(torch.cat([h.real, h.imag]) if h.is_complex() else h)
    return torch.stack(outs), h, {"v": v, "m": m, "p": p, "k": k}


def reference_forward(layer, x, lengths=None, state=None):
    """The whole layer. ``x``: (T, B, I) time-major (complex for ``complex_input``); ``lengths``:
    list or None; ``state``: None or dict with h (L*D, B, H), v, m, p (L*D, B, H), step (L*D, B).
    Returns (output (T, B, D*F) zero-padded, h_n, momentum dict)."""
    T, Bsz, _ = x.shape
    H = layer.hidden_size
    D = 2 if layer.bidirectional else 1
    L = layer.num_layers
    F_out = 2 * H if layer.unitary else H
    lengths = [T] * Bsz if lengths is None else list(lengths)
    state = state or {}
    real = layer.modrelu_bias_l0.dtype
    cdt = torch.complex128 if real == torch.float64 else torch.complex64
    zeros_h = torch.zeros(H, dtype=cdt if layer.unitary else real)
    zeros_m = torch.zeros(H, dtype=real)

    def init(name, idx, b, default):
        t = state.get(name)
        return default if t is None else t[idx, b]

    out = torch.zeros(T, Bsz, D * F_out, dtype=real)
    h_n = [[None] * Bsz for _ in range(L * D)]
    mom_n = [[None] * Bsz for _ in range(L * D)]
    for b in range(Bsz):
        n = lengths[b]
        layer_in = x[:n, b]
        for li in range(L):
            dir_outs = []
            for di in range(D):
                idx = li * D + di
                seq = layer_in if di == 0 else layer_in.flip(0)
                mom = {
                    "v": init("v", idx, b, zeros_h),
                    "m": init("m", idx, b, zeros_m),
                    "p": init("p", idx, b, zeros_h),
                    "k": int(state["step"][idx, b]) if state.get("step") is not None else 0,
                }
                o, h, mom = reference_direction(layer, li, di, seq, init("h", idx, b, zeros_h), mom)
                dir_outs.append(o if di == 0 else o.flip(0))
                h_n[idx][b], mom_n[idx][b] = h, mom
            layer_in = torch.cat(dir_outs, 1)
        out[:n, b] = layer_in
    stack = lambda rows: torch.stack([torch.stack(r) for r in rows])  # noqa: E731
    mom = {name: stack([[mom_n[i][b][name] for b in range(Bsz)] for i in range(L * D)]) for name in ("v", "m", "p")}
    mom["step"] = torch.tensor([[mom_n[i][b]["k"] for b in range(Bsz)] for i in range(L * D)])
    return out, stack(h_n), mom
