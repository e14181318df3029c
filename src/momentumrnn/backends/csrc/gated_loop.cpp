// The gated recurrences (RNN / LSTM / GRU) whose drive is formed inside the time loop on CPU:
// normalized drives (Adam, RMSProp), the lookahead drive (Nesterov) and the linear drive (heavy
// ball, scheduled restart: the velocity alone, whose backward needs neither u nor v). Built at first use by
// momentumrnn/backends/_build.py (flags chosen from the CPU capability torch itself detected on
// the machine it runs on); called from the operator momentumrnn::gated_loop (backends/loop_ops.py).
// The element-wise step: loop_math.h; the equations: docs/equations.md; the Python version of the
// same loop: backends/fused.py.
//
// One time step, forward: the recurrent GEMM h_{t-1} W_hh^T per panel of hidden units (panels.h)
// and, right after each panel's GEMM, the element-wise pass of its units (loop_math.h). A team of
// threads owns rows of the batch (no barrier) or panels (one barrier per step): team_for in
// panels.h. The backward is the same in reverse (dH_t[:, units] =
// dR_{t+1} W_hh[:, units], then the adjoint of those units).
// Input GEMMs and weight-gradient GEMMs run on blocks of K steps (large GEMMs: MKL).
//
// Padded steps (t > last[b]) are skipped: outputs, gates and cell states there are written as 0
// and no state or gradient is touched, so nothing non-finite can leak from padding.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/ops/addmm_cpu_dispatch.h>
#include <ATen/ops/mm_cpu_dispatch.h>
#include <torch/library.h>

#include <array>
#include <cstring>
#include <optional>
#include <tuple>
#include <vector>

#include "loop_math.h"
#include "panels.h"

namespace {

using at::Tensor;
using namespace momentumrnn_loop;
using OptTensor = std::optional<Tensor>;

Tensor contig(const OptTensor& t) { return t.has_value() && t->defined() ? t->contiguous() : Tensor(); }

template <typename T>
const T* ptr(const Tensor& t) { return t.defined() && t.numel() > 0 ? t.const_data_ptr<T>() : nullptr; }

template <typename T>
T* mptr(Tensor& t) { return t.defined() && t.numel() > 0 ? t.mutable_data_ptr<T>() : nullptr; }

// The loop's sizes, constants and step-independent inputs (forward and backward alike).
template <typename T>
Loop<T> make_loop(int64_t host, int64_t mode, bool velocity, int64_t T_, int64_t B, int64_t I, int64_t H, int64_t G,
                  int64_t K, double mu, double eps, double beta, const Tensor& last, const Tensor& alpha,
                  const Tensor& beta_k, const Tensor& bias_e, const Tensor& b_hn, const Tensor& x,
                  const Tensor& w_ih, const Tensor& b_ih, bool fly) {
  Loop<T> L{host, mode, velocity, T_, B, I, H, G, K, T(mu), T(eps), T(beta)};
  L.last = ptr<int64_t>(last);
  L.alpha = ptr<T>(alpha);
  L.beta_k = ptr<T>(beta_k);
  L.ab_stride = alpha.defined() ? alpha.size(1) : 0;
  L.bias_e = ptr<T>(bias_e);
  L.b_hn = ptr<T>(b_hn);
  if (fly && I == 1) {  // u on the fly (x, w_ih, b_ih contiguous)
    L.x1 = x.const_data_ptr<T>();
    L.w1 = w_ih.const_data_ptr<T>();
    L.b1 = ptr<T>(b_ih);
  }
  return L;
}

// the panel's columns of a (., G) row: gate q of units [j0, j0 + nb) at q H + j0
template <typename T>
void zero_units(T* row, int64_t ng, int64_t H, int64_t j0, int64_t nb) {
  if (row) for (int64_t q = 0; q < ng; ++q) std::memset(row + q * H + j0, 0, nb * sizeof(T));
}

template <typename T>
void copy_units(T* dst, const T* src, int64_t ng, int64_t H, int64_t j0, int64_t nb) {
  for (int64_t q = 0; q < ng; ++q) std::memcpy(dst + q * H + j0, src + q * H + j0, nb * sizeof(T));
}

// Scratch buffers that do not outlive a call (the input drive u or its gradient, the recomputed
// drive states, the gradient of R, the panels' GEMM results), kept per calling thread between calls
// and reused: about 1 MB each (block_steps sizes the blocks so), at most 4 MB each (larger ones are
// allocated per call: their work outweighs the faults), kKeptBytes in all. Freed and
// allocated again at every call they cost page faults whenever glibc returned the memory to the
// system (301 faults a call in a fresh process at T = 64, B = 32, H = 32, Adam); measured, one
// thread, in-process interleaved: the backward there 1465 -> 1337 us, RMSProp 1229 -> 1133 us.
constexpr int64_t kKeptBytes = int64_t(32) << 20;

// The kept tensors only own the memory: each call wraps it in a tensor of its own (from_blob), made
// under the caller's inference mode, so that one kept under torch.inference_mode() can be written
// by a later call outside it.
Tensor workspace(int slot, at::IntArrayRef shape, const at::TensorOptions& opt) {
  thread_local std::array<Tensor, 8> kept;
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  if (n * static_cast<int64_t>(opt.dtype().itemsize()) > kKeptBytes / 8) return at::empty(shape, opt);
  Tensor& t = kept[slot];
  if (!t.defined() || t.numel() < n || t.scalar_type() != opt.dtype().toScalarType()) t = at::empty({n}, opt);
  return at::from_blob(t.data_ptr(), shape, opt);
}

int64_t grain_rows(int64_t G) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(G, 1)); }

// u = x W_ih^T + b_ih for steps [t0, t0 + k) into buf (k * B, G)
void input_gemm(const Tensor& buf, const Tensor& x, const Tensor& w_ih, const Tensor& b_ih, int64_t t0, int64_t k) {
  const int64_t B = x.size(1), I = x.size(2);
  Tensor xb = x.narrow(0, t0, k).view({k * B, I});
  Tensor out = buf.narrow(0, 0, k * B);
  if (b_ih.defined()) {
    at::cpu::addmm_out(out, b_ih, xb, w_ih.t());
  } else {
    at::cpu::mm_out(out, xb, w_ih.t());
  }
}

std::vector<Tensor> forward(int64_t host, int64_t mode, bool velocity, const Tensor& x_, const Tensor& w_ih_,
                            const OptTensor& b_ih_, const Tensor& bias_e_, const Tensor& w_hh_,
                            const OptTensor& b_hn_, const Tensor& h0_, const OptTensor& c0_, const OptTensor& v0_,
                            const OptTensor& m0_, const OptTensor& p0_, const OptTensor& alpha_,
                            const OptTensor& beta_k_, const OptTensor& last_, double mu, double eps, double beta,
                            int64_t K, bool keep_u, bool keep_states) {
  Tensor x = x_.contiguous(), w_ih = w_ih_.contiguous(), w_hh = w_hh_.contiguous();
  Tensor b_ih = contig(b_ih_), bias_e = bias_e_.contiguous(), b_hn = contig(b_hn_), h0 = h0_.contiguous();
  Tensor c0 = contig(c0_), v0 = contig(v0_), m0 = contig(m0_), p0 = contig(p0_);
  Tensor alpha = contig(alpha_), beta_k = contig(beta_k_), last = contig(last_);
  const int64_t T_ = x.size(0), B = x.size(1), I = x.size(2), G = w_hh.size(0), H = w_hh.size(1);
  TORCH_CHECK(G == gates_of(host) * H, "gated_loop: W_hh has ", G, " rows, expected ", gates_of(host), " x ", H);
  for (const Tensor* t : {&w_ih, &w_hh, &bias_e, &h0}) {
    TORCH_CHECK(t->scalar_type() == x.scalar_type(), "gated_loop: every tensor must have the input's dtype ",
                x.scalar_type(), ", got ", t->scalar_type());
  }
  const int64_t nb = (T_ + K - 1) / K;
  auto opt = x.options();
  Tensor hs = at::empty({T_, B, H}, opt);
  Tensor cs = host == LSTM ? at::empty({T_, B, H}, opt) : at::empty({0}, opt);
  Tensor acts = host == LSTM || host == GRU ? at::empty({T_, B, G}, opt) : at::empty({0}, opt);
  Tensor rn = host == GRU ? at::empty({T_, B, H}, opt) : at::empty({0}, opt);
  const bool norm = mode == NORMALIZED, linear = mode == LINEAR, look = mode == LOOKAHEAD;
  const bool has_v = (norm && velocity) || linear;  // a velocity state v
  // (the linear drive's backward needs neither u nor v: no checkpoints.) Normalized drives: the
  // states entering each block (nb rows), which the backward recomputes the block's from; or, with
  // keep_states, every step's (T + 1 rows: the initial state, then m_t / v_t after step t),
  // written by the step itself and read by the backward as they are (no recomputation).
  keep_states = keep_states && norm;
  const int64_t ck_rows = keep_states ? T_ + 1 : nb;
  Tensor ck_v = norm && velocity ? at::empty({ck_rows, B, G}, opt) : at::empty({0}, opt);
  Tensor ck_m = norm ? at::empty({ck_rows, B, G}, opt) : at::empty({0}, opt);
  // running states (B, G)
  Tensor m = norm ? (m0.defined() ? m0.clone() : at::zeros({B, G}, opt)) : Tensor();
  Tensor v = has_v ? (v0.defined() ? v0.clone() : at::zeros({B, G}, opt)) : Tensor();
  Tensor P = look ? (p0.defined() ? p0.clone() : at::zeros({B, G}, opt)) : Tensor();
  Tensor m_last = norm ? at::zeros({B, G}, opt) : at::empty({0}, opt);
  Tensor v_last = has_v ? at::zeros({B, G}, opt) : at::empty({0}, opt);
  Tensor p_last = look ? at::zeros({B, G}, opt) : at::empty({0}, opt);
  Tensor c_zero = host == LSTM && !c0.defined() ? at::zeros({B, H}, opt) : c0;
  // u = x W_ih^T + b_ih, block by block; kept for the backward when recomputing it costs a real GEMM
  keep_u = keep_u && norm;
  Tensor u_all = keep_u ? at::empty({T_, B, G}, opt) : at::empty({0}, opt);
  Tensor U = keep_u ? Tensor() : workspace(0, {std::min(K, T_) * B, G}, opt);

  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gated_loop_forward", [&] {
    using T = scalar_t;
    const Loop<T> L = make_loop<T>(host, mode, velocity, T_, B, I, H, G, K, mu, eps, beta, last, alpha, beta_k,
                                   bias_e, b_hn, x, w_ih, b_ih, !keep_u);
    const bool fly = L.x1 != nullptr;
    const Team team = team_for(panels_for<T>(host, H, false), T_, B, G);
    const int64_t nth = team.n;
    const Panels ps = panels_for<T>(host, H, false, nth == 1 || team.rows);
    const Tensor wf = pack_forward<T>(w_hh, ps);
    const T* wfp = wf.const_data_ptr<T>();
    const int64_t sw = ps.ng * ps.nbu;
    Tensor scratch = workspace(1, {nth * B * sw}, opt);  // each thread's panel result (B, ng nb)
    T* Sp = scratch.mutable_data_ptr<T>();
    T* Mp = mptr<T>(m);
    T* Vp = mptr<T>(v);
    T* Mkp = keep_states ? ck_m.mutable_data_ptr<T>() : nullptr;  // every step's states
    T* Vkp = keep_states && velocity ? ck_v.mutable_data_ptr<T>() : nullptr;
    // or the states entering each block, written there by the step before it rather than copied from
    // the running rows at each block's start (the same values: outputs and gradients bit-identical).
    // Two blocks a step's (B, G) rows of m and v: at T = 128, B = 128, H = 256 (two steps a block)
    // 128 copies of 512 KB a forward; with them gone, aten::copy_ over 5 forward + backward (Adam, two
    // threads) 660 calls / 99 ms -> 30 / 11 ms.
    T* Ckm = norm && !keep_states ? ck_m.mutable_data_ptr<T>() : nullptr;
    T* Ckv = norm && !keep_states && velocity ? ck_v.mutable_data_ptr<T>() : nullptr;
    if (keep_states) {  // row 0: the initial state
      std::memcpy(Mkp, Mp, B * G * sizeof(T));
      if (Vkp) std::memcpy(Vkp, Vp, B * G * sizeof(T));
    }
    T* Pp = mptr<T>(P);
    T* mlp = mptr<T>(m_last);
    T* vlp = mptr<T>(v_last);
    T* plp = mptr<T>(p_last);
    T* hsp = hs.mutable_data_ptr<T>();
    T* csp = mptr<T>(cs);
    T* ap = mptr<T>(acts);
    T* rnp = mptr<T>(rn);
    const T* h0p = h0.const_data_ptr<T>();
    const T* c0p = ptr<T>(c_zero);
    for (int64_t blk = 0; blk < nb; ++blk) {
      const int64_t t0 = blk * K, k = std::min(K, T_ - t0);
      if (norm && !keep_states && blk == 0) {  // the states entering later blocks: written there directly
        ck_m[0].copy_(m);
        if (velocity) ck_v[0].copy_(v);
      }
      Tensor Ub = keep_u ? u_all.narrow(0, t0, k).view({k * B, G}) : U;
      // u kept: one input GEMM for all steps (MKL packs W_ih at each call; PTB shape, in-process, the
      // forward per block -> at once: Adam 182 -> 172 ms two threads, 294 -> 284 one; RMSProp 169 -> 151)
      if (keep_u && blk == 0) input_gemm(u_all.view({T_ * B, G}), x, w_ih, b_ih, 0, T_);
      if (!fly && !keep_u) input_gemm(Ub, x, w_ih, b_ih, t0, k);
      const T* Up = fly ? nullptr : Ub.const_data_ptr<T>();
      TeamError err;
      run_team(nth, [&](int64_t tid, int64_t nt) {
        const int64_t p0 = team.p0(ps, tid, nt), p1 = team.p1(ps, tid, nt);
        const int64_t b0 = team.b0(B, tid, nt), b1 = team.b1(B, tid, nt);
        T* S = Sp + tid * B * sw;  // the panel's result for rows [b0, b1)
        for (int64_t j = 0; j < k; ++j) {
          const int64_t t = t0 + j;
          // the drive states' rows this step reads (mi, vi) and writes (mo, vo)
          // (checkpointed: a block's first step reads the checkpoint, its last writes the next block's)
          const bool first = Ckm && j == 0, to_ck = Ckm && j == k - 1 && blk + 1 < nb;
          T* const mi = keep_states ? Mkp + t * B * G : first ? Ckm + blk * B * G : Mp;
          T* const mo = keep_states ? Mkp + (t + 1) * B * G : to_ck ? Ckm + (blk + 1) * B * G : Mp;
          T* const vi = Vkp ? Vkp + t * B * G : first && Ckv ? Ckv + blk * B * G : Vp;
          T* const vo = Vkp ? Vkp + (t + 1) * B * G : to_ck && Ckv ? Ckv + (blk + 1) * B * G : Vp;
          err.guard([&] {
            const T* hprev = t == 0 ? h0p : hsp + (t - 1) * B * H;
            for (int64_t p = p0; p < p1; ++p) {
              const int64_t j0 = ps.j0(p), w = ps.width(p), N = ps.ng * w;
              blocked_gemm(b1 - b0, N, H, H, N, N, false, hprev + b0 * H, wfp + p * H * sw, S, ps.chunk);
              for (int64_t b = b0; b < b1; ++b) {
                if (b + 1 < b1) {  // the next row's drive inputs and states, and its gate outputs
                  const int64_t nx = (b + 1) * G;
                  if (Up) prefetch_units(Up + j * B * G + nx, ps.ng, H, j0, w, false);
                  prefetch_units(mi ? mi + nx : Pp ? Pp + nx : nullptr, ps.ng, H, j0, w, true);
                  prefetch_units(vi ? vi + nx : nullptr, ps.ng, H, j0, w, true);
                  prefetch_units(ap ? ap + (t * B + b + 1) * G : nullptr, ps.ng, H, j0, w, true);
                }
                const int64_t row = t * B + b;
                T* hrow = hsp + row * H;
                T* arow = ap ? ap + row * G : nullptr;
                T* crow = csp ? csp + row * H : nullptr;
                T* rnrow = rnp ? rnp + row * H : nullptr;
                if (L.padded(t, b)) {
                  std::memset(hrow + j0, 0, w * sizeof(T));
                  zero_units(arow, ps.ng, H, j0, w);
                  if (crow) std::memset(crow + j0, 0, w * sizeof(T));
                  if (rnrow) std::memset(rnrow + j0, 0, w * sizeof(T));
                  continue;
                }
                const T* hp = t == 0 ? h0p + b * H : hsp + (row - B) * H;
                const T* cp = host == LSTM ? (t == 0 ? c0p + b * H : csp + (row - B) * H) : nullptr;
                typename Loop<T>::Row r{Up ? Up + (j * B + b) * G : nullptr, mo ? mo + b * G : nullptr,
                                        vo ? vo + b * G : nullptr, Pp ? Pp + b * G : nullptr, T(0), T(0),
                                        mi ? mi + b * G : nullptr, vi ? vi + b * G : nullptr,
                                        fly ? L.x1[row] : T(0)};
                if (look) {
                  r.a = L.a_at(t, b);
                  r.bb = L.b_at(t, b);
                } else if (linear) {
                  r.a = L.mu_at(t, b);
                }
                L.fwd_row(r, S + (b - b0) * N, w, j0, j0 + w, arow, hp, cp, hrow, crow, rnrow);
                if (L.last != nullptr && t == L.last[b]) {
                  if (norm) copy_units(mlp + b * G, mo + b * G, ps.ng, H, j0, w);
                  if (has_v) copy_units(vlp + b * G, vo + b * G, ps.ng, H, j0, w);
                  if (look) copy_units(plp + b * G, Pp + b * G, ps.ng, H, j0, w);
                }
              }
            }
          });
          team.step_barrier(nt);
        }
      });
      err.rethrow();
    }
  });
  if (!last.defined()) {
    if (norm) m_last.copy_(keep_states ? ck_m[T_] : m);
    if (has_v) v_last.copy_(keep_states && velocity ? ck_v[T_] : v);
    if (look) p_last.copy_(P);
  }
  return {hs, cs, acts, rn, ck_v, ck_m, v_last, m_last, p_last, u_all};
}

std::vector<Tensor> backward(int64_t host, int64_t mode, bool velocity, const Tensor& x_, const Tensor& w_ih_,
                             const OptTensor& b_ih_, const Tensor& bias_e_, const Tensor& w_hh_,
                             const OptTensor& b_hn_, const Tensor& h0_, const OptTensor& c0_,
                             const OptTensor& alpha_, const OptTensor& beta_k_, const OptTensor& last_,
                             const Tensor& hs_, const Tensor& cs_, const Tensor& acts_, const Tensor& rn_,
                             const Tensor& ck_v_, const Tensor& ck_m_, const Tensor& u_all,
                             const OptTensor& d_hs_,
                             const OptTensor& d_cs_, const OptTensor& d_v_last_, const OptTensor& d_m_last_,
                             const OptTensor& d_p_last_, double mu, double eps, double beta, int64_t K,
                             int64_t rows, bool need_x) {
  Tensor x = x_.contiguous(), w_ih = w_ih_.contiguous(), w_hh = w_hh_.contiguous();
  Tensor b_ih = contig(b_ih_), bias_e = bias_e_.contiguous(), b_hn = contig(b_hn_), h0 = h0_.contiguous();
  Tensor c0 = contig(c0_), alpha = contig(alpha_), beta_k = contig(beta_k_), last = contig(last_);
  Tensor hs = hs_.contiguous(), cs = cs_.contiguous(), acts = acts_.contiguous(), rn = rn_.contiguous();
  Tensor ck_v = ck_v_.contiguous(), ck_m = ck_m_.contiguous(), u_keep = u_all.contiguous();
  Tensor d_hs = contig(d_hs_), d_cs = contig(d_cs_), d_v_last = contig(d_v_last_), d_m_last = contig(d_m_last_);
  Tensor d_p_last = contig(d_p_last_);
  const int64_t T_ = x.size(0), B = x.size(1), I = x.size(2), G = w_hh.size(0), H = w_hh.size(1);
  const int64_t nb = (T_ + K - 1) / K;
  const bool norm = mode == NORMALIZED, linear = mode == LINEAR, look = mode == LOOKAHEAD;
  auto opt = x.options();
  const int64_t Kc = std::min(K, T_);
  // u (recomputed when the forward did not keep it), then du (normalized drives)
  Tensor U = workspace(0, {Kc, B, G}, opt);
  // m_t, v_t: every step's kept by the forward (T + 1 rows), or recomputed block by block
  const bool kept = norm && ck_m.size(0) == T_ + 1;
  Tensor Mb = norm && !kept ? workspace(2, {Kc, B, G}, opt) : Tensor();
  Tensor Vb = norm && velocity && !kept ? workspace(3, {Kc, B, G}, opt) : Tensor();
  // The gradients of R (and of the GRU's drive) are kept for KW steps (a multiple of K, at least
  // `rows` rows): one weight-gradient GEMM per KW steps, not per cache-sized block (GEMMs with small
  // inner dimensions are slow).
  const int64_t KW = K * std::max<int64_t>(1, ((rows + B - 1) / std::max<int64_t>(B, 1) + K - 1) / K);
  const int64_t KWc = std::min(KW, nb * K);
  Tensor dR = workspace(4, {KWc, B, G}, opt);                              // gradient of R
  Tensor dRn = workspace(5, {B, G}, opt);      // dR of the step after a group of KW (its slot is reused)
  Tensor dDb = host == GRU ? workspace(6, {KWc, B, G}, opt) : Tensor();    // of the drive (GRU)
  Tensor Av = (norm && velocity) || linear ? at::zeros({B, G}, opt) : Tensor();  // adjoint carries
  Tensor Am = norm ? at::zeros({B, G}, opt) : Tensor();
  Tensor DG = look ? at::zeros({B, G}, opt) : Tensor();
  Tensor dH = at::zeros({B, H}, opt);
  Tensor dC = host == LSTM ? at::zeros({B, H}, opt) : Tensor();
  Tensor d_x = need_x ? at::empty({T_, B, I}, opt) : at::empty({0}, opt);
  Tensor d_w_ih = at::zeros({G, I}, opt), d_w_hh = at::zeros({G, H}, opt);
  Tensor d_b_ih = b_ih.defined() ? at::zeros({G}, opt) : at::empty({0}, opt);
  Tensor d_bias_e = at::zeros({G}, opt);
  Tensor d_b_hn = host == GRU ? at::zeros({H}, opt) : at::empty({0}, opt);
  Tensor c_zero = host == LSTM && !c0.defined() ? at::zeros({B, H}, opt) : c0;
  // du = u_scale * (U after the pass, or the lookahead's drive gradient)
  const double u_scale = look ? -eps : 1.0;

  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gated_loop_backward", [&] {
    using T = scalar_t;
    using V = Vectorized<T>;
    const Loop<T> L = make_loop<T>(host, mode, velocity, T_, B, I, H, G, K, mu, eps, beta, last, alpha, beta_k,
                                   bias_e, b_hn, x, w_ih, b_ih, u_keep.numel() == 0);
    const bool fly = L.x1 != nullptr;  // u on the fly: no input pass (U holds du, if anything)
    const Panels ps = panels_for<T>(host, H, true);
    const Tensor wb = pack_backward<T>(w_hh, ps);
    const T* wbp = wb.const_data_ptr<T>();
    const Team team = team_for(ps, T_, B, G);
    const int64_t nth = team.n;
    const bool gru = host == GRU;
    // One input feature: the bias and input-weight gradients summed by each thread of the team in the
    // drive's adjoint (Loop::add_sums: sum dD, sum du, sum du x: 3 G per thread, combined after the
    // last block), instead of a sum, a sum and a GEMV over the block's buffers after each block: with
    // two threads at T = 128, B = 128, H = 256 (two steps a block) those small operations between
    // the team's regions took about 20 % of the backward (skipped, timing only: 176 -> 142 ms).
    // Ours / nn.LSTM there, Adam, alternate processes (with u on the fly): backward 1.27 -> 1.15,
    // forward + backward 1.22 -> 1.13 (RMSProp 1.16 -> 1.05); one thread, T = 64, B = 32, H = 32,
    // 1.32 -> 1.24.
    // (Two levels, so that a float sum runs over a block's rows, then over blocks, not over all T B
    // rows in one: each thread's block sums in the first 3 G, its totals in the next 3 G.)
    Tensor sums = fly ? at::zeros({nth, 2, 3, G}, opt) : Tensor();
    T* sp = mptr<T>(sums);
    // du written to U only where read after the loop (the input gradient; the block sums without u on
    // the fly)
    const bool keep_du = !fly || need_x;
    T* Up = U.mutable_data_ptr<T>();
    T* Mbp = mptr<T>(Mb);
    T* Vbp = mptr<T>(Vb);
    T* Avp = mptr<T>(Av);
    T* Amp = mptr<T>(Am);
    T* DGp = mptr<T>(DG);
    T* dHp = dH.mutable_data_ptr<T>();
    T* dCp = mptr<T>(dC);
    T* dRp = dR.mutable_data_ptr<T>();
    T* dRnp = dRn.mutable_data_ptr<T>();
    T* dDp = mptr<T>(dDb);
    const T* hsp = hs.const_data_ptr<T>();
    const T* csp = ptr<T>(cs);
    const T* ap = ptr<T>(acts);
    const T* rnp = ptr<T>(rn);
    const T* h0p = h0.const_data_ptr<T>();
    const T* c0p = ptr<T>(c_zero);
    const T* dhsp = ptr<T>(d_hs);
    const T* dcsp = ptr<T>(d_cs);
    const T* dvlp = ptr<T>(d_v_last);
    const T* dmlp = ptr<T>(d_m_last);
    const T* dplp = ptr<T>(d_p_last);
    Tensor U2 = U.view({Kc * B, G});
    // dH[b0:b1, units of panel p] (+)= A[b0:b1] W_hh[:, units] (the GRU keeps its direct part dh z there)
    auto recurrent = [&](const T* A, int64_t p, int64_t b0, int64_t b1) {
      const int64_t w = ps.width(p);
      blocked_gemm(b1 - b0, w, G, G, w, H, gru, A + b0 * G, wbp + p * G * ps.nbu, dHp + b0 * H + ps.j0(p),
                   ps.chunk);
    };
    for (int64_t blk = nb - 1; blk >= 0; --blk) {
      const int64_t t0 = blk * K, k = std::min(K, T_ - t0);
      const int64_t s0 = (t0 / KW) * KW, off = t0 - s0;  // this block's place in the dR buffer
      // dR of the step after this block: in the buffer, or (first step of the next group, whose slot
      // 0 this group overwrites) saved apart
      const T* dR_after = nullptr;
      if (t0 + k < T_) {
        if (off + k < KW) {
          dR_after = dRp + (off + k) * B * G;
        } else {
          std::memcpy(dRnp, dRp, B * G * sizeof(T));
          dR_after = dRnp;
        }
      }
      // u of the block's steps: the forward's (read in place; du goes to U) or recomputed into U
      // (the lookahead backward does not read u). No copy of the kept u (T B G elements, 26 MB at
      // the PTB shape) nor of the running states (B G per step): less memory traffic, though the
      // backward's time at the PTB shape stayed within the machine's noise (0.60 against 0.61 s).
      const bool u_kept = norm && u_keep.numel() > 0;
      if (norm && !u_kept && !fly) input_gemm(U2, x, w_ih, b_ih, t0, k);
      const T* uin = u_kept ? u_keep.const_data_ptr<T>() + t0 * B * G : fly ? nullptr : Up;
      // the block's m_t, v_t: (j B + b) G for its step j
      const T* Mbk = kept ? ck_m.const_data_ptr<T>() + (t0 + 1) * B * G : Mbp;
      const T* Vbk = kept && velocity ? ck_v.const_data_ptr<T>() + (t0 + 1) * B * G : Vbp;
      if (norm && !kept) {  // the states m_t, v_t of the block, from its checkpoint, straight into their rows
        const T* ckm = ck_m[blk].const_data_ptr<T>();
        const T* ckv = velocity ? ck_v[blk].const_data_ptr<T>() : nullptr;
        at::parallel_for(0, B, grain_rows(G), [&](int64_t b0, int64_t b1) {
          constexpr int64_t W = V::size();
          for (int64_t b = b0; b < b1; ++b) {
            for (int64_t j = 0; j < k; ++j) {
              if (L.padded(t0 + j, b)) break;
              const T* u = uin ? uin + (j * B + b) * G : nullptr;
              const T xu = fly ? L.x1[(t0 + j) * B + b] : T(0);
              const T* m0 = j == 0 ? ckm + b * G : Mbp + ((j - 1) * B + b) * G;
              const T* v0 = !velocity ? nullptr : j == 0 ? ckv + b * G : Vbp + ((j - 1) * B + b) * G;
              T* m1 = Mbp + (j * B + b) * G;
              T* v1 = velocity ? Vbp + (j * B + b) * G : nullptr;
              for (int64_t o = 0; o < G; o += W) {
                const int64_t n = std::min<int64_t>(W, G - o);
                V mm, vv;
                L.advance(L.u_at(u, xu, o, n), m0 + o, v0 ? v0 + o : nullptr, m1 + o, v1 ? v1 + o : nullptr, n, mm,
                          vv);
              }
            }
          }
        });
      }
      TeamError err;
      run_team(nth, [&](int64_t tid, int64_t nt) {
        const int64_t p0 = team.p0(ps, tid, nt), p1 = team.p1(ps, tid, nt);
        const int64_t b0 = team.b0(B, tid, nt), b1 = team.b1(B, tid, nt);
        for (int64_t j = k - 1; j >= 0; --j) {
          const int64_t t = t0 + j;
          err.guard([&] {
            // dH_t = dR_{t+1} W_hh (+ dh_{t+1} z_{t+1}); at the last step it is 0 (+ nothing)
            const T* A = t + 1 < T_ ? (j == k - 1 ? dR_after : dRp + (off + j + 1) * B * G) : nullptr;
            for (int64_t p = p0; p < p1; ++p) {
              const int64_t j0 = ps.j0(p), w = ps.width(p);
              if (A) recurrent(A, p, b0, b1);
              for (int64_t b = b0; b < b1; ++b) {
                if (b + 1 < b1) {  // the next row's saved gates, drive inputs and states, and its outputs
                  const int64_t nx = (j * B + b + 1) * G;
                  prefetch_units(ap ? ap + (t * B + b + 1) * G : nullptr, ps.ng, H, j0, w, false);
                  if (norm) {  // u, and du where it is written apart (the lookahead's step reads neither)
                    if (uin) prefetch_units(uin + nx, ps.ng, H, j0, w, false);
                    if (u_kept) prefetch_units(Up + nx, ps.ng, H, j0, w, true);
                  }
                  prefetch_units(Mbk ? Mbk + nx : nullptr, ps.ng, H, j0, w, false);
                  prefetch_units(Vbk ? Vbk + nx : nullptr, ps.ng, H, j0, w, false);
                  prefetch_units(dRp + ((off + j) * B + b + 1) * G, ps.ng, H, j0, w, true);
                }
                T* dRrow = dRp + ((off + j) * B + b) * G;
                T* durow = keep_du ? Up + (j * B + b) * G : nullptr;
                T* dDrow = dDp ? dDp + ((off + j) * B + b) * G : nullptr;
                if (L.padded(t, b)) {  // nothing flows through padding
                  zero_units(dRrow, ps.ng, H, j0, w);
                  zero_units(durow, ps.ng, H, j0, w);
                  zero_units(dDrow, ps.ng, H, j0, w);
                  continue;
                }
                const bool at_last = L.is_last(t, b);
                typename Loop<T>::BRow r{uin ? uin + (j * B + b) * G : nullptr,
                                         durow,
                                         Mbk ? Mbk + (j * B + b) * G : nullptr,
                                         Vbk ? Vbk + (j * B + b) * G : nullptr,
                                         Avp ? Avp + b * G : nullptr,
                                         Amp ? Amp + b * G : nullptr,
                                         DGp ? DGp + b * G : nullptr,
                                         dDrow,
                                         at_last && dvlp ? dvlp + b * G : nullptr,
                                         at_last && dmlp ? dmlp + b * G : nullptr,
                                         at_last && dplp ? dplp + b * G : nullptr,
                                         T(0), T(0), fly ? L.x1[t * B + b] : T(0), sp ? sp + tid * 6 * G : nullptr};
                if (look) {
                  r.a = L.a_at(t, b);
                  r.bnext = L.b_at(t + 1, b);
                } else if (linear) {
                  r.a = L.mu_at(t, b);
                }
                const int64_t row = t * B + b;
                const T* hp = t == 0 ? h0p + b * H : hsp + (row - B) * H;
                const T* cp = host == LSTM ? (t == 0 ? c0p + b * H : csp + (row - B) * H) : nullptr;
                L.bwd_row(r, j0, j0 + w, ap ? ap + row * G : nullptr, hsp + row * H, hp,
                          csp ? csp + row * H : nullptr, cp, rnp ? rnp + row * H : nullptr,
                          dhsp ? dhsp + row * H : nullptr, dcsp ? dcsp + row * H : nullptr, dHp + b * H,
                          dCp ? dCp + b * H : nullptr, dRrow);
              }
            }
          });
          team.step_barrier(nt);
        }
        if (blk == 0) {  // the gradient of h0: dR_0 W_hh (+ dh_0 z_0)
          err.guard([&] {
            for (int64_t p = p0; p < p1; ++p) recurrent(dRp, p, b0, b1);
          });
        }
        if (sp) fold_sums(sp + tid * 6 * G, 3 * G);
      });
      err.rethrow();
      // ---- the block's input and weight gradients
      Tensor dRb = dR.narrow(0, off, k).view({k * B, G});
      Tensor dDsrc = host == GRU ? dDb.narrow(0, off, k).view({k * B, G}) : dRb;
      Tensor dU = look ? dDsrc : U2.narrow(0, 0, k * B);
      Tensor xb = x.narrow(0, t0, k).view({k * B, I});
      if (need_x) {
        Tensor dxb = d_x.narrow(0, t0, k).view({k * B, I});
        at::cpu::mm_out(dxb, dU, w_ih);
        if (look) dxb.mul_(u_scale);
      }
      if (!fly) {
        at::cpu::addmm_out(d_w_ih, d_w_ih, dU.t(), xb, 1.0, u_scale);
        Tensor su = dU.sum(0);
        if (b_ih.defined()) d_b_ih.add_(su, u_scale);
        d_bias_e.add_(dDsrc.sum(0));
      }
      if (off == 0) {  // the steps [s0, s0 + len) are done: their recurrent weight gradient
        const int64_t len = std::min(KW, T_ - s0);
        Tensor hprev0 = s0 == 0 ? h0 : hs[s0 - 1];
        at::cpu::addmm_out(d_w_hh, d_w_hh, dR[0].t(), hprev0);
        if (len > 1) {
          at::cpu::addmm_out(d_w_hh, d_w_hh, dR.narrow(0, 1, len - 1).view({(len - 1) * B, G}).t(),
                             hs.narrow(0, s0, len - 1).view({(len - 1) * B, H}));
        }
        if (host == GRU) d_b_hn.add_(dR.narrow(0, 0, len).view({len * B, G}).narrow(1, 2 * H, H).sum(0));
      }
    }
    if (sp) {  // the threads' sums, in thread order
      Tensor tot = sums.select(1, 1).sum(0);
      d_bias_e.add_(tot[0]);
      if (b_ih.defined()) d_b_ih.add_(tot[1], u_scale);
      d_w_ih.view({G}).add_(tot[2], u_scale);
    }
  });
  Tensor d_v0 = Av.defined() ? Av : at::empty({0}, opt);
  Tensor d_m0 = norm ? Am : at::empty({0}, opt);
  Tensor d_p0 = at::empty({0}, opt);
  if (look) d_p0 = DG * beta_k[0].view({-1, 1}).neg();
  Tensor d_c0 = host == LSTM ? dC : at::empty({0}, opt);
  return {d_x, d_w_ih, d_b_ih, d_bias_e, d_w_hh, d_b_hn, dH, d_c0, d_v0, d_m0, d_p0};
}

// The loop's float math, element by element (for the accuracy tests of the float versions).
template <typename F>
Tensor map_elements(const Tensor& x_, const F& f) {
  Tensor x = x_.contiguous(), y = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "loop_math", [&] {
    using V = Vectorized<scalar_t>;
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    const int64_t n = x.numel();
    at::parallel_for(0, n, 1 << 16, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; i += V::size()) {
        const int64_t k = std::min<int64_t>(V::size(), i1 - i);
        f(V::loadu(xp + i, k)).store(yp + i, k);
      }
    });
  });
  return y;
}

template <typename V>
using VecOf = Vec<typename V::value_type>;

Tensor loop_tanh(const Tensor& x) {
  return map_elements(x, [](const auto& v) { return VecOf<std::decay_t<decltype(v)>>::tanh(v); });
}

Tensor loop_inv_sqrt(const Tensor& x) {
  return map_elements(x, [](const auto& v) { return VecOf<std::decay_t<decltype(v)>>::inv_sqrt(v); });
}

}  // namespace

TORCH_LIBRARY(momentumrnn_ext, m) {
  m.def("tanh(Tensor x) -> Tensor");
  m.def("inv_sqrt(Tensor x) -> Tensor");
  m.def("forward(int host, int mode, bool velocity, Tensor x, Tensor w_ih, Tensor? b_ih, Tensor bias_e, "
        "Tensor w_hh, Tensor? b_hn, Tensor h0, Tensor? c0, Tensor? v0, Tensor? m0, Tensor? p0, Tensor? alpha, "
        "Tensor? beta_k, Tensor? last, float mu, float eps, float beta, int K, bool keep_u, bool keep_states) "
        "-> Tensor[]");
  m.def("backward(int host, int mode, bool velocity, Tensor x, Tensor w_ih, Tensor? b_ih, Tensor bias_e, "
        "Tensor w_hh, Tensor? b_hn, Tensor h0, Tensor? c0, Tensor? alpha, Tensor? beta_k, Tensor? last, "
        "Tensor hs, Tensor cs, Tensor acts, Tensor rn, Tensor ck_v, Tensor ck_m, Tensor u_all, Tensor? d_hs, "
        "Tensor? d_cs, "
        "Tensor? d_v_last, Tensor? d_m_last, Tensor? d_p_last, float mu, float eps, float beta, int K, "
        "int rows, bool need_x) -> Tensor[]");
}

TORCH_LIBRARY_IMPL(momentumrnn_ext, CPU, m) {
  m.impl("forward", &forward);
  m.impl("backward", &backward);
  m.impl("tanh", &loop_tanh);
  m.impl("inv_sqrt", &loop_inv_sqrt);
}
