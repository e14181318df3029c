"""A literal, step-by-step reference of docs/equations.md sections 2-3 (gated hosts), the LSTM's
projection (``proj_size``, LSTMP) included.

Deliberately naive: one sequence at a time, one time step at a time, plain tensor ops, no shared
code with the library except reading a layer's parameters and hyper-parameters. Every fast path
of the library is tested against this.
"""

from __future__ import annotations

import torch


def _step_counter(k: int, restart: int) -> int:
    # k = 1 at the first step, +1 every step; the step after k = F has k = 1 again (F > 0).
    k = k + 1
    if restart > 0 and k > restart:
        k = 1
    return k


def reference_direction(layer, layer_idx, direction, seq, h, c, mom):
    """Run one layer and direction over ``seq`` (n, I) for ONE sequence, in the order of the equations.

    ``mom`` is a dict with v, m, p (vectors) and k (int). Returns (outputs (n, H_out), h, c, mom);
    ``H_out`` is ``proj_size`` for an LSTM with projections (``h = W_hr (o * tanh(c))``).
    """
    sfx = f"_l{layer_idx}" + ("_reverse" if direction == 1 else "")
    W_ih = getattr(layer, "weight_ih" + sfx)
    W_hh = getattr(layer, "weight_hh" + sfx)
    b_ih = getattr(layer, "bias_ih" + sfx) if layer.bias else torch.zeros_like(W_ih[:, 0])
    b_hh = getattr(layer, "bias_hh" + sfx) if layer.bias else torch.zeros_like(W_hh[:, 0])
    W_hr = getattr(layer, "weight_hr" + sfx) if getattr(layer, "proj_size", 0) else None
    mu, eps = layer.hyper_parameters(layer_idx, direction)
    sch = layer.scheme
    kind, beta, F = sch.kind, sch.beta, sch.restart
    host = layer.host
    v, m, p, k = mom["v"], mom["m"], mom["p"], mom["k"]
    outs = []
    for x in seq:
        u = W_ih @ x + b_ih  # input drive, b_ih inside the momentum
        r = W_hh @ h + b_hh  # recurrent drive
        g_total = None
        if kind == "none":
            d = u
        elif kind == "heavy_ball":
            v = mu * v + eps * u
            d = v
        elif kind == "adam":
            v = mu * v + eps * u
            m = beta * m + (1 - beta) * u * u
            d = v / torch.sqrt(m + 1e-16)
        elif kind == "rmsprop":
            m = beta * m + (1 - beta) * u * u
            d = (eps * u) / torch.sqrt(m + 1e-16)
        elif kind == "restart":
            k = _step_counter(k, F)
            mu_k = (k - 1) / (k + 2)
            v = mu_k * v + eps * u
            d = v
        elif kind == "nesterov":
            k = _step_counter(k, F)
            mu_k = (k - 1) / (k + 2)
            if host != "gru":
                p_new = r - eps * u
                g_total = p_new + mu_k * (p_new - p)
                p = p_new
        else:
            raise AssertionError(kind)

        if host == "rnn":
            pre = g_total if g_total is not None else d + r
            h = torch.tanh(pre) if layer.nonlinearity == "tanh" else torch.relu(pre)
        elif host == "lstm":
            pre = g_total if g_total is not None else d + r
            i, f, g, o = pre.chunk(4)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            if W_hr is not None:  # LSTM with projections: W_hh reads this projected h next step
                h = W_hr @ h
        else:  # gru
            r_r, r_z, r_n = r.chunk(3)
            if kind == "nesterov":
                u_r, u_z, u_n = u.chunk(3)
                p_r, p_z, p_n = p.chunk(3)
                pn_r = r_r - eps * u_r
                pn_z = r_z - eps * u_z
                reset = torch.sigmoid(pn_r + mu_k * (pn_r - p_r))
                z = torch.sigmoid(pn_z + mu_k * (pn_z - p_z))
                pn_n = reset * r_n - eps * u_n
                n = torch.tanh(pn_n + mu_k * (pn_n - p_n))
                p = torch.cat([pn_r, pn_z, pn_n])
            else:
                d_r, d_z, d_n = d.chunk(3)
                reset = torch.sigmoid(d_r + r_r)
                z = torch.sigmoid(d_z + r_z)
                n = torch.tanh(d_n + reset * r_n)
            h = (1 - z) * n + z * h
        outs.append(h)
    return torch.stack(outs), h, c, {"v": v, "m": m, "p": p, "k": k}


def reference_forward(layer, x, lengths=None, state=None):
    """Reference of a whole layer. ``x``: (T, B, I) time-major; ``lengths``: list of ints or None.

    ``state``: None or dict with h (L*D, B, H_out), c (L*D, B, H) and v, m, p (L*D, B, GH), step (L*D, B).
    Returns (output (T, B, D*H_out) zero-padded, h_n, c_n, momentum dict of (L*D, B, ...) tensors);
    ``H_out`` is ``proj_size`` if it is > 0, else ``hidden_size``.
    """
    T, B, _ = x.shape
    H = layer.hidden_size
    H_out = getattr(layer, "proj_size", 0) or H
    D = 2 if layer.bidirectional else 1
    L = layer.num_layers
    GH = layer.weight_hh_l0.shape[0]
    lengths = [T] * B if lengths is None else list(lengths)
    state = state or {}
    zeros_h = x.new_zeros(H_out)
    zeros_c = x.new_zeros(H)
    zeros_g = x.new_zeros(GH)

    def init(name, idx, b, default):
        t = state.get(name)
        return default if t is None else t[idx, b]

    out = x.new_zeros(T, B, D * H_out)
    h_n = [[None] * B for _ in range(L * D)]
    c_n = [[None] * B for _ in range(L * D)]
    mom_n = [[None] * B for _ in range(L * D)]
    for b in range(B):
        n = lengths[b]
        layer_in = x[:n, b]
        for li in range(L):
            dir_outs = []
            for di in range(D):
                idx = li * D + di
                seq = layer_in if di == 0 else layer_in.flip(0)
                mom = {
                    "v": init("v", idx, b, zeros_g),
                    "m": init("m", idx, b, zeros_g),
                    "p": init("p", idx, b, zeros_g),
                    "k": int(state["step"][idx, b]) if state.get("step") is not None else 0,
                }
                o, h, c, mom = reference_direction(
                    layer, li, di, seq, init("h", idx, b, zeros_h), init("c", idx, b, zeros_c), mom
                )
                dir_outs.append(o if di == 0 else o.flip(0))
                h_n[idx][b], c_n[idx][b], mom_n[idx][b] = h, c, mom
            layer_in = torch.cat(dir_outs, 1)
        out[:n, b] = layer_in
    stack = lambda rows: torch.stack([torch.stack(r) for r in rows])  # noqa: E731
    mom = {name: stack([[mom_n[i][b][name] for b in range(B)] for i in range(L * D)]) for name in ("v", "m", "p")}
    mom["step"] = torch.tensor([[mom_n[i][b]["k"] for b in range(B)] for i in range(L * D)])
    return out, stack(h_n), stack(c_n) if layer.host == "lstm" else None, mom
