// The element-wise part of one time step of the gated loops (gated_loop.cpp): for one batch row and a
// range of hidden units [j0, j1), the drive (Adam / RMSProp states, or the Nesterov lookahead), the
// gates and the cell, vectorized with ATen's Vectorized<T>; and its adjoint for the backward. The
// equations: docs/equations.md; the Python version of the same step: backends/fused.py.
//
// Layouts: the drive states m, v, P, the input part u and the gate activations are rows of G = gates
// x H columns in torch.nn's gate order (gate q of unit j at column q * H + j). The recurrent GEMM's
// result R arrives in the panel layout of gated_loop.cpp (gate q of unit j at R[q * ld + j - j0]).
// Subnormal floats: the Adam / RMSProp states v and m are flushed to 0 below the smallest normal
// number at every step (docs/equations.md, section 8).
#pragma once

#include <ATen/cpu/vec/vec.h>

#include <cmath>

#include <algorithm>
#include <cstdint>
#include <limits>

// the drive's step and its adjoint are inlined into the phases below (called, they spilled every
// vector register around each call)
#if defined(__GNUC__) || defined(__clang__)
#define MRNN_INLINE inline __attribute__((always_inline))
#else
#define MRNN_INLINE inline
#endif

namespace momentumrnn_loop {

using at::vec::Vectorized;

constexpr int64_t RNN_TANH = 0, RNN_RELU = 1, LSTM = 2, GRU = 3;
// drives: NORMALIZED (Adam, RMSProp), LOOKAHEAD (Nesterov), LINEAR (heavy ball, scheduled restart:
// v_t = mu_t v_{t-1} + eps u_t, the drive v_t itself)
constexpr int64_t NORMALIZED = 0, LOOKAHEAD = 1, LINEAR = 2;
constexpr double ADAM_EPS = 1e-16;

inline int64_t gates_of(int64_t host) { return host == LSTM ? 4 : host == GRU ? 3 : 1; }

template <typename T>
struct Vec {
  using V = Vectorized<T>;
  static V sigmoid(const V& x) { return (V(T(1)) + x.neg().exp()).reciprocal(); }
  static V tanh(const V& x) { return x.tanh(); }  // Sleef's, within 1 unit in the last place
  static V flush(const V& x) {
    return V::blendv(x, V(T(0)), x.abs() < V(std::numeric_limits<T>::min()));
  }
  static V load_or_zero(const T* p, int64_t n) { return p ? V::loadu(p, n) : V(T(0)); }
  // 1 / sqrt(a), a > 0 (the normalized drives' a = m + 1e-16)
  static V inv_sqrt(const V& a) { return a.sqrt().reciprocal(); }
};

// tanh in float: within 0.82 units in the last place (ATen's, Sleef's tanhf: within 1.0) in 0.6 of its
// time (0.98 against 1.6 ns per element here; the LSTM computes two per hidden unit and step, and
// Sleef's was a third of the forward's element-wise time). |x| < 0.75: x + x^3 P(x^2), P a minimax
// fit of degree 5 (0.09 units); above: (1 - z) / (1 + z), z = exp(-2|x|) (Sleef's exp, within 1
// unit), with the rounding errors of 1 - z, 1 + z and of the division compensated (their exact
// residuals, by FMA). Against float64 tanh over 29 million floats: at most 0.82 units
// (tests/test_fast_paths.py checks it through the operator momentumrnn_ext::tanh).
template <>
inline Vectorized<float> Vec<float>::tanh(const Vectorized<float>& x) {
  using V = Vectorized<float>;
  using at::vec::fmadd;
  const V one(1.f), ax = x.abs(), z = (ax * V(-2.f)).exp();
  const V n = one - z, d = one + z;
  const V en = (one - n) - z, ed = z - (d - one);  // 1 - z = n + en and 1 + z = d + ed exactly
  const V q = n / d, rem = fmadd(q.neg(), d, n);   // n - q d exactly
  const V inv = one - z + z * z - z * z * z;        // 1 / d to 2 % (z < 0.23): plenty for a correction
  const V big = fmadd(rem + en - q * ed, inv, q);
  const V s = x * x;
  V p = fmadd(s, V(0.0017442619428038597f), V(-0.00766947865486145f));
  p = fmadd(s, p, V(0.021459631621837616f));
  p = fmadd(s, p, V(-0.05389487370848656f));
  p = fmadd(s, p, V(0.1333272010087967f));
  p = fmadd(s, p, V(-0.33333316445350647f));
  const V mag = V::blendv(big, fmadd(ax, s * p, ax), ax < V(0.75f));  // |tanh(x)|, sign bit clear
  return mag | (x & V(-0.f));  // x's sign (tanh(-0) = -0): bit operations, not Sleef's copysign (a call)
}

// 1 / sqrt(a) in float for a > 0 (+inf: 0), the normalized drives' backward: the CPU's reciprocal
// square root estimate and Newton steps instead of a square root and a division (two passes through
// the one divider, the hot spot of the drive's adjoint). Within 1.05 units in the last place (AVX-512,
// one step: 1.04; AVX2, two steps: 1.00; tests/test_fast_paths.py). Backward alone, one thread,
// Adam, T = 784, B = 128, H = 128, alternate processes: 439-464 -> 438-450 ms; forward + backward at
// T = 64, B = 32, H = 64 ours / nn.LSTM backward 1.15-1.22 -> 1.15-1.16. The forward keeps its exact
// division: there the estimate measured no faster (2.30 against 2.29 ms; the forward's element-wise
// time is not the divider's).
#if defined(CPU_CAPABILITY_AVX512)
template <>
inline Vectorized<float> Vec<float>::inv_sqrt(const Vectorized<float>& a) {
  const __m512 x = a, half = _mm512_set1_ps(0.5f);
  __m512 y = _mm512_rsqrt14_ps(x);  // within 2^-14
  const __m512 hx = _mm512_mul_ps(x, half);
  y = _mm512_fmadd_ps(y, _mm512_fnmadd_ps(_mm512_mul_ps(hx, y), y, half), y);  // y (3 - x y^2) / 2
  return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(INFINITY), _CMP_EQ_OQ), y, _mm512_setzero_ps());
}
#elif defined(CPU_CAPABILITY_AVX2)
template <>
inline Vectorized<float> Vec<float>::inv_sqrt(const Vectorized<float>& a) {
  const __m256 x = a, half = _mm256_set1_ps(0.5f);
  __m256 y = _mm256_rsqrt_ps(x);  // within 1.5 2^-12: two steps
  const __m256 hx = _mm256_mul_ps(x, half);
  y = _mm256_fmadd_ps(y, _mm256_fnmadd_ps(_mm256_mul_ps(hx, y), y, half), y);
  y = _mm256_fmadd_ps(y, _mm256_fnmadd_ps(_mm256_mul_ps(hx, y), y, half), y);
  return _mm256_blendv_ps(y, _mm256_setzero_ps(), _mm256_cmp_ps(x, _mm256_set1_ps(INFINITY), _CMP_EQ_OQ));
}
#endif

// Everything one call needs; raw pointers into contiguous tensors (nullptr: absent).
template <typename T>
struct Loop {
  using V = Vectorized<T>;
  static constexpr int64_t W = V::size();
  int64_t host, mode;
  bool velocity;
  int64_t T_, B, I, H, G, K;
  T mu, eps, beta;
  const int64_t* last = nullptr;  // (B,) or nullptr (every sequence full length)
  const T* alpha = nullptr;       // (T, B') lookahead coefficients, B' in {1, B}
  const T* beta_k = nullptr;
  int64_t ab_stride = 0;           // B: per sequence, 1: shared
  const T* bias_e = nullptr;      // (G,)
  const T* b_hn = nullptr;        // (H,) GRU
  // One input feature (x1 != nullptr): u = x w_ih + b_ih computed where it is read, from the row's x
  // (Row::xu), instead of an input pass writing u (T B G elements a call, or a block's) and the step
  // reading it back. Ours / nn.LSTM, one thread, alternate processes, before -> after: T = 64,
  // B = 32, H = 32 Adam 1.29 -> 1.24 (forward 1.52 -> 1.45), Nesterov 1.14 -> 1.09; T = 784,
  // B = 128, H = 128 Adam 1.20 -> 1.16 (forward 1.20 -> 1.10). Bit-identical (the same fmadd).
  const T* x1 = nullptr;  // (T, B)
  const T* w1 = nullptr;  // (G,)
  const T* b1 = nullptr;  // (G,) or nullptr (no b_ih)

  bool padded(int64_t t, int64_t b) const { return last != nullptr && t > last[b]; }
  bool is_last(int64_t t, int64_t b) const { return last != nullptr ? t == last[b] : t == T_ - 1; }
  T a_at(int64_t t, int64_t b) const { return alpha[t * ab_stride + (ab_stride > 1 ? b : 0)]; }
  T b_at(int64_t t, int64_t b) const {
    return t < T_ ? beta_k[t * ab_stride + (ab_stride > 1 ? b : 0)] : T(0);
  }
  // the LINEAR drive's coefficient of v_{t-1} at step t: mu_t (alpha, scheduled) or mu
  T mu_at(int64_t t, int64_t b) const { return alpha != nullptr ? a_at(t, b) : mu; }

  // ---- forward: the momentum states of one chunk (normalized drives), shared by the forward and
  // the backward's recomputation so that both give bit-identical states: m_{t-1}, v_{t-1} read from
  // m0, v0, m_t, v_t written to m1, v1 (the forward: the same running rows; the backward: the
  // previous and this step's rows of its buffer, so that no running copy is kept).
  MRNN_INLINE void advance(const V& uu, const T* m0, const T* v0, T* m1, T* v1, int64_t n, V& mm, V& vv) const {
    mm = Vec<T>::flush(V(beta) * V::loadu(m0, n) + V(T(1) - beta) * (uu * uu));
    mm.store(m1, n);
    if (velocity) {
      vv = Vec<T>::flush(V(mu) * V::loadu(v0, n) + V(eps) * uu);
      vv.store(v1, n);
    }
  }

  // u of gate elements [o, o + n): read from the row u, or (u == nullptr: one input feature) x w_ih +
  // b_ih from the row's x, the same operation as the input pass's (bit-identical either way)
  MRNN_INLINE V u_at(const T* u, T xu, int64_t o, int64_t n) const {
    if (u) return V::loadu(u + o, n);
    const V w = V::loadu(w1 + o, n);
    return b1 ? at::vec::fmadd(V(xu), w, V::loadu(b1 + o, n)) : V(xu) * w;
  }

  // The total pre-activation of gate elements [o, o + n) from ``base`` (the recurrent part:
  // R = h W_hh^T, or r * (R_n + b_hn) for the GRU candidate). u, m, v, P: this row's pointers.
  struct Row {
    const T* u;
    T* m;  // m_t, v_t written here (normalized: read from mi, vi; the same rows unless the states
    T* v;  // are kept step by step)
    T* P;
    T a, bb;
    const T* mi;
    const T* vi;
    T xu;  // x_t of the row (u on the fly)
  };
  MRNN_INLINE V pre(const Row& r, int64_t o, int64_t n, const V& base) const {
    V bias = V::loadu(bias_e + o, n);
    if (mode == LINEAR) {  // r.a: mu_t
      V vv = Vec<T>::flush(V(r.a) * V::loadu(r.v + o, n) + V(eps) * u_at(r.u, r.xu, o, n));
      vv.store(r.v + o, n);
      return base + vv + bias;
    }
    if (mode == NORMALIZED) {
      const V uu = u_at(r.u, r.xu, o, n);
      V mm, vv;
      advance(uu, r.mi + o, r.vi + o, r.m + o, r.v + o, n, mm, vv);
      V num = velocity ? vv : V(eps) * uu;
      return base + num / (mm + V(T(ADAM_EPS))).sqrt() + bias;
    }
    V p = base + bias - V(eps) * u_at(r.u, r.xu, o, n);
    V pp = V::loadu(r.P + o, n);
    p.store(r.P + o, n);
    return V(r.a) * p - V(r.bb) * pp;
  }

  // One forward step of one row (batch element), units [j0, j1), in three phases over the row's gate
  // chunks: the pre-activations (drive), the activations, the cells. R: the row's GEMM result
  // (panel layout, gate stride ld), used as scratch; a: the row's gate activations (written; unused
  // by the RNN); hp/cp: previous h/c; h/c/rn: outputs (rn: the GRU's W_hn h + b_hn).
  void fwd_row(const Row& r, T* R, int64_t ld, int64_t j0, int64_t j1, T* a, const T* hp, const T* cp, T* h,
               T* c, T* rn) const {
    fwd_drive(r, R, ld, j0, j1);
    fwd_gates(r, R, ld, j0, j1, a, h, rn);
    fwd_out(R, ld, j0, j1, a, hp, cp, h, c);
  }
  void fwd_drive(const Row& r, T* R, int64_t ld, int64_t j0, int64_t j1) const {
    const int64_t w = j1 - j0, ng = host == LSTM ? 4 : host == GRU ? 2 : 1;  // the GRU's candidate: later
    for (int64_t q = 0; q < ng; ++q) {
      for (int64_t i = 0; i < w; i += W) {
        const int64_t n = std::min<int64_t>(W, w - i);
        pre(r, q * H + j0 + i, n, V::loadu(R + q * ld + i, n)).store(R + q * ld + i, n);
      }
    }
  }
  void fwd_gates(const Row& r, T* R, int64_t ld, int64_t j0, int64_t j1, T* a, T* h, T* rn) const {
    const int64_t w = j1 - j0;
    if (host == LSTM) {
      for (int64_t q = 0; q < 4; ++q) {
        for (int64_t i = 0; i < w; i += W) {
          const int64_t n = std::min<int64_t>(W, w - i);
          V x = V::loadu(R + q * ld + i, n);
          (q == 2 ? Vec<T>::tanh(x) : Vec<T>::sigmoid(x)).store(a + q * H + j0 + i, n);
        }
      }
    } else if (host == GRU) {  // r, z; then the candidate's pre-activation r * (R_n + b_hn) + drive
      for (int64_t i = 0; i < w; i += W) {
        const int64_t n = std::min<int64_t>(W, w - i), j = j0 + i;
        V gr = Vec<T>::sigmoid(V::loadu(R + i, n));
        gr.store(a + j, n);
        Vec<T>::sigmoid(V::loadu(R + ld + i, n)).store(a + H + j, n);
        V rnv = V::loadu(R + 2 * ld + i, n) + V::loadu(b_hn + j, n);
        rnv.store(rn + j, n);
        pre(r, 2 * H + j, n, gr * rnv).store(R + 2 * ld + i, n);
      }
    } else {
      for (int64_t i = 0; i < w; i += W) {
        const int64_t n = std::min<int64_t>(W, w - i);
        V g = V::loadu(R + i, n);
        g = host == RNN_TANH ? Vec<T>::tanh(g) : V::blendv(g, V(T(0)), g < V(T(0)));  // NaN stays NaN
        g.store(h + j0 + i, n);
      }
    }
  }
  void fwd_out(T* R, int64_t ld, int64_t j0, int64_t j1, T* a, const T* hp, const T* cp, T* h, T* c) const {
    const int64_t w = j1 - j0;
    for (int64_t i = 0; i < w && host == LSTM; i += W) {
      const int64_t n = std::min<int64_t>(W, w - i), j = j0 + i;
      V gi = V::loadu(a + j, n), gf = V::loadu(a + H + j, n);
      V gg = V::loadu(a + 2 * H + j, n), go = V::loadu(a + 3 * H + j, n);
      V cc = gf * V::loadu(cp + j, n) + gi * gg;
      cc.store(c + j, n);
      (go * Vec<T>::tanh(cc)).store(h + j, n);
    }
    for (int64_t i = 0; i < w && host == GRU; i += W) {
      const int64_t n = std::min<int64_t>(W, w - i), j = j0 + i;
      V gn = Vec<T>::tanh(V::loadu(R + 2 * ld + i, n));
      gn.store(a + 2 * H + j, n);
      V gz = V::loadu(a + H + j, n);
      (gn + gz * (V::loadu(hp + j, n) - gn)).store(h + j, n);
    }
  }

  // ---- backward: the drive's adjoint for gate elements [o, o + n), given the gradient ``dg`` of
  // their total pre-activation; returns the gradient of ``base`` (that of the drive, dD). Normalized:
  // writes du (which may be u itself; not where r.du is null) and carries Av = mu gv, Am = beta gm;
  // linear: writes du = eps gv and carries Av = mu_t gv (r.a: mu_t); lookahead: carries DG = dg_{t+1}.
  // With r.sums, each also adds its dD, du, du x to the thread's sums (add_sums).
  struct BRow {
    const T* u;        // u (normalized; nullptr: on the fly from xu)
    T* du;             // du, written (may alias u: each element is read before written), or nullptr
    const T* m;        // m_t, v_t (normalized)
    const T* v;
    T* Av;
    T* Am;
    T* DG;             // dg_{t+1} on entry, dg_t on exit (lookahead)
    T* dD;             // gradient of the drive, when kept apart from dR (GRU)
    const T* dvl;      // gradients of the returned final states (nullptr: none / not this step)
    const T* dml;
    const T* dpl;
    T a, bnext;
    T xu;
    T* sums;           // one input feature: the thread's block sums of dD, du, du x (3 G), or nullptr
  };
  // sums += dD, du, du x over gate elements [o, o + n) (the bias and input-weight gradients)
  MRNN_INLINE void add_sums(const BRow& r, int64_t o, int64_t n, const V& dd, const V& du) const {
    if (!r.sums) return;
    T* s = r.sums + o;
    (V::loadu(s, n) + dd).store(s, n);
    (V::loadu(s + G, n) + du).store(s + G, n);
    at::vec::fmadd(du, V(r.xu), V::loadu(s + 2 * G, n)).store(s + 2 * G, n);
  }
  MRNN_INLINE V adj(const BRow& r, int64_t o, int64_t n, const V& dg) const {
    if (mode == LINEAR) {
      V gv = V::loadu(r.Av + o, n) + Vec<T>::load_or_zero(r.dvl ? r.dvl + o : nullptr, n) + dg;
      (V(r.a) * gv).store(r.Av + o, n);
      const V du = V(eps) * gv;
      if (r.du) du.store(r.du + o, n);
      if (r.dD) dg.store(r.dD + o, n);
      add_sums(r, o, n, dg, du);
      return dg;
    }
    if (mode == NORMALIZED) {
      V uu = u_at(r.u, r.xu, o, n);
      V inv = Vec<T>::inv_sqrt(V::loadu(r.m + o, n) + V(T(ADAM_EPS)));
      V gm = V::loadu(r.Am + o, n) + Vec<T>::load_or_zero(r.dml ? r.dml + o : nullptr, n);
      V du;
      if (velocity) {
        V gv = V::loadu(r.Av + o, n) + Vec<T>::load_or_zero(r.dvl ? r.dvl + o : nullptr, n) + dg * inv;
        gm = gm - V(T(0.5)) * dg * V::loadu(r.v + o, n) * inv * inv * inv;
        du = V(eps) * gv + V(T(2) * (T(1) - beta)) * uu * gm;
        (V(mu) * gv).store(r.Av + o, n);
      } else {
        gm = gm - V(T(0.5) * eps) * dg * uu * inv * inv * inv;
        du = V(eps) * dg * inv + V(T(2) * (T(1) - beta)) * uu * gm;
      }
      (V(beta) * gm).store(r.Am + o, n);
      if (r.du) du.store(r.du + o, n);
      if (r.dD) dg.store(r.dD + o, n);
      add_sums(r, o, n, dg, du);
      return dg;
    }
    V dgn = V::loadu(r.DG + o, n);
    dg.store(r.DG + o, n);
    V dp = V(r.a) * dg - V(r.bnext) * dgn + Vec<T>::load_or_zero(r.dpl ? r.dpl + o : nullptr, n);
    if (r.dD) dp.store(r.dD + o, n);
    add_sums(r, o, n, dp, dp);  // the lookahead's du: -eps dp (the scale applied after the loop)
    return dp;
  }

  // One backward step of one row, units [j0, j1), in two phases: the gradients of the gates'
  // pre-activations (into dR; the GRU's whole step), then the drive's adjoint in place. dH: gradient
  // reaching h_t from later steps on entry; for the GRU its direct part dh * z on exit (the GEMM adds
  // dR W_hh). dR: gradient of R (and of R_n + b_hn), torch.nn's gate layout.
  void bwd_row(const BRow& r, int64_t j0, int64_t j1, const T* a, const T* hrow, const T* hp, const T* c,
               const T* cp, const T* rn, const T* dhs, const T* dcs, T* dH, T* dC, T* dR) const {
    bwd_gates(r, j0, j1, a, hrow, hp, c, cp, rn, dhs, dcs, dH, dC, dR);
    bwd_drive(r, j0, j1, dR);
  }
  void bwd_gates(const BRow& r, int64_t j0, int64_t j1, const T* a, const T* hrow, const T* hp, const T* c,
                 const T* cp, const T* rn, const T* dhs, const T* dcs, T* dH, T* dC, T* dR) const {
    const int64_t w = j1 - j0;
    V one(T(1));
    for (int64_t i = 0; i < w; i += W) {
      const int64_t n = std::min<int64_t>(W, w - i), j = j0 + i;
      V dh = V::loadu(dH + j, n) + Vec<T>::load_or_zero(dhs ? dhs + j : nullptr, n);
      if (host == LSTM) {
        V gi = V::loadu(a + j, n), gf = V::loadu(a + H + j, n);
        V gg = V::loadu(a + 2 * H + j, n), go = V::loadu(a + 3 * H + j, n);
        V tc = Vec<T>::tanh(V::loadu(c + j, n));
        V dc = V::loadu(dC + j, n) + Vec<T>::load_or_zero(dcs ? dcs + j : nullptr, n) + dh * go * (one - tc * tc);
        (dc * gg * gi * (one - gi)).store(dR + j, n);
        (dc * V::loadu(cp + j, n) * gf * (one - gf)).store(dR + H + j, n);
        (dc * gi * (one - gg * gg)).store(dR + 2 * H + j, n);
        (dh * tc * go * (one - go)).store(dR + 3 * H + j, n);
        (dc * gf).store(dC + j, n);
      } else if (host == GRU) {
        V gr = V::loadu(a + j, n), gz = V::loadu(a + H + j, n), gn = V::loadu(a + 2 * H + j, n);
        V dgz = dh * (V::loadu(hp + j, n) - gn) * gz * (one - gz);
        V dgn = dh * (one - gz) * (one - gn * gn);
        V dbn = adj(r, 2 * H + j, n, dgn);
        V dgr = dbn * V::loadu(rn + j, n) * gr * (one - gr);
        (dbn * gr).store(dR + 2 * H + j, n);
        adj(r, j, n, dgr).store(dR + j, n);
        adj(r, H + j, n, dgz).store(dR + H + j, n);
        (dh * gz).store(dH + j, n);
      } else {
        V h = V::loadu(hrow + j, n);
        (host == RNN_TANH ? dh * (one - h * h) : V::blendv(dh, V(T(0)), h <= V(T(0)))).store(dR + j, n);
      }
    }
  }
  void bwd_drive(const BRow& r, int64_t j0, int64_t j1, T* dR) const {
    const int64_t w = j1 - j0, ng = host == LSTM ? 4 : host == GRU ? 0 : 1;  // the GRU's: in bwd_gates
    for (int64_t q = 0; q < ng; ++q) {
      for (int64_t i = 0; i < w; i += W) {
        const int64_t n = std::min<int64_t>(W, w - i), o = q * H + j0 + i;
        adj(r, o, n, V::loadu(dR + o, n)).store(dR + o, n);
      }
    }
  }
};

// a thread's block sums (n elements) added to its totals (the next n), and cleared
template <typename T>
void fold_sums(T* sums, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    sums[n + i] += sums[i];
    sums[i] = T(0);
  }
}

}  // namespace momentumrnn_loop
