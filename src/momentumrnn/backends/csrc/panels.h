// The recurrent GEMM of the gated loops (gated_loop.cpp), per panel of hidden units, and the team
// of threads that owns the panels for a block of steps.
//
// W_hh is packed once per call into panels that hold every gate of a range of units (the packing
// oneDNN's own RNN does); each panel's GEMM runs on oneDNN's brgemm micro-kernel through ATen
// (at::native::cpublas::brgemm: generated for the CPU it runs on, AVX-512 or AVX2, with BLAS where
// oneDNN cannot run it), and the element-wise pass of those units follows while the result is in
// cache. Measured against ATen's mm per step (MKL, which packs W_hh again at every call): the
// per-step GEMM at the PTB shape (B = 20, H = 1150, one thread) took 3.0-3.7 ms instead of 4.2-7.1 ms.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/native/CPUBlas.h>
#include <ATen/ops/addmm_cpu_dispatch.h>
#include <ATen/ops/mm_cpu_dispatch.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <exception>
#include <mutex>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "loop_math.h"

namespace momentumrnn_loop {

using at::Tensor;

// ---- panels of hidden units: panel p holds units [p nbu, min(H, (p + 1) nbu)), nbu a multiple of the
// vector width, so that each panel's GEMM has about 4 vectors of columns (64 floats with AVX-512,
// 32 with AVX2: the widths at which brgemm ran fastest at the PTB and sMNIST shapes): forward, the
// ng gates of nbu units; backward, nbu units (dH's columns). Backward with H <= 256, at least 256
// bytes of units: there a step's element-wise adjoint (ng B nbu elements per panel, read from rows of
// G at a stride) outweighs its GEMM (B nbu G), and longer runs per row stream better. Measured as
// AVX2 (one thread, Adam, B = 128, medians of 3-4 interleaved rounds): the backward at H = 128 took
// 0.48-0.54 s with 64 floats against 0.59-0.72 s with 32, at H = 256 0.78-0.85 s against 0.87-0.99;
// at H = 1150 (PTB) 32 stayed faster (0.58-0.61 s against 0.64-0.67), and at H = 512 no better.
struct Panels {
  int64_t H, ng, nbu, np;
  int64_t chunk;  // blocked_gemm's chunk of W_hh (elements) for this pass's GEMMs
  int64_t j0(int64_t p) const { return p * nbu; }
  int64_t width(int64_t p) const { return std::min(H, (p + 1) * nbu) - p * nbu; }
};

//
// Forward with H <= 256 on one thread, or on each thread of a team of rows (see team_for): panels
// of up to 128 units, one panel up to H = 128. The element-wise pass then reads each row's drive
// states and gate rows in runs of up to 512 bytes instead of 64, and its loads stopped stalling (perf: the forward's element-wise code
// 0.88 -> 0.36 ms a call at T = 64, B = 32, H = 64). Measured (Adam, one thread, AVX-512, forward,
// in-process interleaved medians, 16 -> 64 / 128 units): T = 64, B = 16, H = 64 1.47 -> 1.22 ms;
// B = 32, H = 64 3.03 -> 2.32; B = 128, H = 64 9.5 -> 6.9; B = 128, H = 128 25.4 -> 18.7;
// B = 64, H = 256 35.1 -> 30.8; T = 2000, B = 8, H = 128 50.1 -> 33.9. At H = 1150 (PTB) the
// narrow panels stayed fastest (343 against 363-393 ms), and in a team of panels they stay narrow
// so that the threads still split a step.
// The forward's GEMM at H <= 256 runs in one chunk of up to kForwardChunk elements of W_hh (512 KB
// of floats, half this machine's L2), so that H = 256 gets 128 units too (64 with
// kChunk): forward at T = 64, B = 128 67.8-71.5 ms against 77.5-79.8 with 64 units (nn.LSTM 75-78).
// One chunk per panel whatever its width keeps the sums in the same order: the results are
// bit-identical to the narrow panels' (and to a team's).
constexpr int64_t kChunk = 65536, kForwardChunk = 131072;

template <typename T>
Panels panels_for(int64_t host, int64_t H, bool backward, bool alone = false) {
  const int64_t ng = gates_of(host), W = Vectorized<T>::size();
  const int64_t wide = std::max<int64_t>(4 * W, 256 / static_cast<int64_t>(sizeof(T)));
  int64_t nbu = backward ? (H <= 256 ? wide : 4 * W) : W * std::max<int64_t>(1, 4 / ng);
  if (!backward && alone && H <= 256) {
    // at most 128 units, and W_hh's panel (H x ng nbu) in one chunk (a second chunk would round
    // the sums differently)
    const int64_t fit = std::min<int64_t>(128, kForwardChunk / (H * ng)) / W * W;
    nbu = std::max(nbu, std::min(fit, (H + W - 1) / W * W));
  }
  return {H, ng, nbu, (H + nbu - 1) / nbu, !backward && H <= 256 ? kForwardChunk : kChunk};
}

// Forward panels: panel p is (H, ng nb) row-major, column q nb + i = row q H + j0 + i of W_hh.
template <typename T>
Tensor pack_forward(const Tensor& w_hh, const Panels& ps) {
  const int64_t H = ps.H, stride = H * ps.ng * ps.nbu;
  Tensor out = at::empty({ps.np * stride}, w_hh.options());
  const T* w = w_hh.const_data_ptr<T>();
  T* o = out.mutable_data_ptr<T>();
  at::parallel_for(0, ps.np, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t nb = ps.width(p), N = ps.ng * nb;
      T* dst = o + p * stride;
      for (int64_t q = 0; q < ps.ng; ++q) {
        for (int64_t i = 0; i < nb; ++i) {
          const T* src = w + (q * H + ps.j0(p) + i) * H;
          for (int64_t k = 0; k < H; ++k) dst[k * N + q * nb + i] = src[k];
        }
      }
    }
  });
  return out;
}

// Backward panels: panel p is (G, nb) row-major = W_hh[:, j0:j0 + nb].
template <typename T>
Tensor pack_backward(const Tensor& w_hh, const Panels& ps) {
  const int64_t G = w_hh.size(0), H = ps.H, stride = G * ps.nbu;
  Tensor out = at::empty({ps.np * stride}, w_hh.options());
  const T* w = w_hh.const_data_ptr<T>();
  T* o = out.mutable_data_ptr<T>();
  at::parallel_for(0, ps.np, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t nb = ps.width(p);
      for (int64_t g = 0; g < G; ++g) std::memcpy(o + p * stride + g * nb, w + g * H + ps.j0(p), nb * sizeof(T));
    }
  });
  return out;
}

// C (M x N, row stride ldc) = [C +] A (M x K, lda) B (K x N, ldb). float: oneDNN's brgemm (BLAS where
// oneDNN cannot run it); double (no brgemm kernel): ATen's mm on views of the same memory.
inline void panel_gemm(int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb, int64_t ldc, bool add,
                       const float* A, const float* B, float* C) {
  at::native::cpublas::brgemm(M, N, K, lda, ldb, ldc, add, A, B, C);
}

inline void panel_gemm(int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb, int64_t ldc, bool add,
                       const double* A, const double* B, double* C) {
  auto opt = at::TensorOptions().dtype(at::kDouble);
  Tensor a = at::from_blob(const_cast<double*>(A), {M, K}, {lda, 1}, opt);
  Tensor b = at::from_blob(const_cast<double*>(B), {K, N}, {ldb, 1}, opt);
  Tensor c = at::from_blob(C, {M, N}, {ldc, 1}, opt);
  if (add) {
    at::cpu::addmm_out(c, c, a, b);
  } else {
    at::cpu::mm_out(c, a, b);
  }
}

// The same with K in chunks whose B part holds about `chunk` elements (kChunk: 256 KB of floats, L2-sized):
// the backward's K = G is long (4600 at the PTB shape) and one brgemm over all of it streamed its B
// panel from L3 (6.6-7.8 ms per step there instead of 3.3-3.7 ms in chunks).
template <typename T>
void blocked_gemm(int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb, int64_t ldc, bool add, const T* A,
                  const T* B, T* C, int64_t chunk) {
  const int64_t chunks = (K * N + chunk - 1) / chunk, kc = (K + chunks - 1) / chunks;
  for (int64_t k0 = 0; k0 < K; k0 += kc) {
    panel_gemm(M, N, std::min(kc, K - k0), lda, ldb, ldc, add || k0 > 0, A + k0, B + k0 * ldb, C);
  }
}

// Prefetch the panel's columns (gate q of units [j0, j0 + w)) of a (., G) row: the element-wise
// pass reads four to eight such arrays per row at a stride of G, too many streams for the hardware
// prefetcher once the step's GEMM has pushed them out of L2 (with the next row prefetched, the
// forward's element-wise time at sMNIST size fell from 2.66 to 2.26 ns per gate element, measured
// with the caches flushed between passes).
template <typename T>
inline void prefetch_units(const T* row, int64_t ng, int64_t H, int64_t j0, int64_t w, bool write) {
#if defined(__GNUC__) || defined(__clang__)
  if (!row) return;
  constexpr int64_t line = 64 / sizeof(T);
  for (int64_t q = 0; q < ng; ++q) {
    for (int64_t i = 0; i < w; i += line) {
      if (write) {
        __builtin_prefetch(row + q * H + j0 + i, 1);
      } else {
        __builtin_prefetch(row + q * H + j0 + i, 0);
      }
    }
  }
#endif
}

// ---- the team: threads that own rows of the batch, or panels, for a whole block of steps (one
// OpenMP region per block instead of one per step; see team_for). An exception (there should be none) is kept,
// the other threads still meet every barrier, and it is raised after the region.
struct TeamError {
  std::atomic<bool> failed{false};
  std::exception_ptr ep;
  std::mutex lock;
  template <typename F>
  void guard(const F& f) {
    if (failed.load(std::memory_order_relaxed)) return;
    try {
      f();
    } catch (...) {
      std::lock_guard<std::mutex> g(lock);
      if (!ep) ep = std::current_exception();
      failed = true;
    }
  }
  void rethrow() {
    if (ep) std::rethrow_exception(ep);
  }
};

inline void team_barrier(int64_t nthreads) {
#ifdef _OPENMP
  if (nthreads > 1) {
#pragma omp barrier
  }
#endif
}

// How a call's steps are split over a team of threads. Rows: each thread runs the whole recurrence
// (every panel) for its own rows of the batch; rows never read each other, so the threads meet only
// at the end of a block, never per step. Panels: the threads share each step by panels of units and
// meet at a barrier after every step (each reads the rows of h_{t-1} that all of them wrote).
//
// Rows where each thread keeps at least kTeamRows rows and W_hh is small (H <= 256): each thread
// streams all of W_hh every step, which at larger H only the panel split shares out. Measured (two
// threads, AVX-512 under KVM, Adam, in-process interleaved medians, forward / backward ms, panels ->
// rows, nn.LSTM): T = 128, B = 128, H = 128 34.2 / 52.8 -> 23.2 / 46.4 (20.4 / 41.6); B = 32, H = 64
// 4.7 / 7.9 -> 3.1 / 5.6 (3.0 / 4.6); T = 64, B = 32, H = 32 1.28 / 1.18 -> 0.85 / 1.03 (0.82 /
// 1.06); H = 256, B = 128 108 / 228 -> 77 / 173 (71 / 120); T = 2000, B = 8 (4 rows a thread) 31.7 /
// 58.2 -> 21.4 / 50.8 (27.4 / 46.0); T = 1000, B = 4 (2 rows) 10.5 / 16.5 -> 7.1 / 13.3 (9.1 / 14.4).
// Panels stayed ahead at H = 512, B = 32 (62 / 118 against 66 / 126) and at the PTB shape (H = 1150,
// B = 20: 169 / 279 against 190 / 293). In the panel team each thread worked as long as one thread
// alone did the whole step (2.2-3.2 s against 3.2-3.3 s over 103 forward calls at B = 128, H = 128)
// although each did half of it; two one-thread processes at B = 64 ran side by side at one's speed.
constexpr int64_t kTeamRows = 2, kTeamRowsMaxH = 256;
struct Team {
  int64_t n;  // threads
  bool rows;  // split the batch's rows (else the panels)
  // thread tid's panels [p0, p1) and rows [b0, b1) in a team of nt (the threads OpenMP gave)
  int64_t p0(const Panels& ps, int64_t tid, int64_t nt) const { return rows ? 0 : ps.np * tid / nt; }
  int64_t p1(const Panels& ps, int64_t tid, int64_t nt) const { return rows ? ps.np : ps.np * (tid + 1) / nt; }
  int64_t b0(int64_t B, int64_t tid, int64_t nt) const { return rows ? B * tid / nt : 0; }
  int64_t b1(int64_t B, int64_t tid, int64_t nt) const { return rows ? B * (tid + 1) / nt : B; }
  // the per-step barrier (panels only)
  void step_barrier(int64_t nt) const {
    if (!rows) team_barrier(nt);
  }
};

// The team for T steps of (B x G x H) multiply-adds each: one thread inside another parallel
// region, or where the work is too small to pay for waking the others (rows: once per block of
// steps, about 2^20 multiply-adds a call; panels: a barrier every step, 2^18 a step).
inline Team team_for(const Panels& narrow, int64_t T, int64_t B, int64_t G) {
  const int64_t nt = at::in_parallel_region() ? 1 : at::get_num_threads();
  const int64_t work = B * G * (narrow.H + 32);
  if (nt > 1 && narrow.H <= kTeamRowsMaxH && B >= 2 * kTeamRows) {
    const int64_t n = std::min<int64_t>({nt, B / kTeamRows, 1 + T * work / (1 << 20)});
    return {std::max<int64_t>(1, n), true};
  }
  return {std::max<int64_t>(1, std::min<int64_t>({nt, narrow.np, 1 + work / (1 << 18)})), false};
}

template <typename F>
void run_team(int64_t nth, const F& f) {
#ifdef _OPENMP
  if (nth > 1) {
#pragma omp parallel num_threads(nth)
    f(omp_get_thread_num(), omp_get_num_threads());
    return;
  }
#endif
  f(0, 1);
}

}  // namespace momentumrnn_loop
