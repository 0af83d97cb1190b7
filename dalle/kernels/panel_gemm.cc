// Few-row float32 matmul against a weight matrix packed into column panels, as an XLA FFI custom call.
//
//   x     [K, M]         the M input rows, transposed (M is small: 1-16 rows per decode step)
//   packed [P, K, 16]    weight column panels: packed[p, k, c] = W[k, 16 p + c] (zero beyond N)
//   out   [M, N]         x^T W,  N <= 16 P
//
// Each panel is one contiguous stream of K * 64 bytes, read once for up to 16 rows at a time with one 16-float
// accumulator per row; panels are split between the threads of XLA's intra-op pool. Built by panel_gemm.py.
#include <algorithm>
#include <array>
#include <cstdint>
#include <utility>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "parallel.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kPanel = 16;     // columns per panel
constexpr int64_t kMaxRows = 16;   // rows per pass over a panel

template <int R>
void PanelRows(const float* xt, int64_t M, int64_t K, const float* panel, float* out, int64_t N, int64_t j0,
               int64_t width) {
#if defined(__AVX512F__)
  __m512 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; ++k) {
    _mm_prefetch(reinterpret_cast<const char*>(panel + (k + 32) * kPanel), _MM_HINT_T0);
    const __m512 w = _mm512_loadu_ps(panel + k * kPanel);
    const float* xk = xt + k * M;
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(xk[r]), w, acc[r]);
  }
  const __mmask16 mask = width >= kPanel ? 0xFFFF : static_cast<__mmask16>((1u << width) - 1);
  for (int r = 0; r < R; ++r) _mm512_mask_storeu_ps(out + r * N + j0, mask, acc[r]);
#else
  float acc[R][kPanel] = {};
  for (int64_t k = 0; k < K; ++k) {
    const float* w = panel + k * kPanel;
    const float* xk = xt + k * M;
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < kPanel; ++c) acc[r][c] += xk[r] * w[c];
  }
  for (int r = 0; r < R; ++r)
    for (int64_t c = 0; c < width; ++c) out[r * N + j0 + c] = acc[r][c];
#endif
}

using RowsFn = void (*)(const float*, int64_t, int64_t, const float*, float*, int64_t, int64_t, int64_t);

template <int... Rs>
constexpr auto MakeTable(std::integer_sequence<int, Rs...>) {
  return std::array<RowsFn, sizeof...(Rs)>{&PanelRows<Rs + 1>...};
}

const auto kRows = MakeTable(std::make_integer_sequence<int, kMaxRows>{});

void PanelRange(const float* xt, int64_t M, int64_t K, const float* packed, float* out, int64_t N, int64_t p0,
                int64_t p1) {
  for (int64_t p = p0; p < p1; ++p) {
    const float* panel = packed + p * K * kPanel;
    const int64_t j0 = p * kPanel;
    const int64_t width = std::min(kPanel, N - j0);
    for (int64_t r0 = 0; r0 < M; r0 += kMaxRows) {
      const int64_t rows = std::min(kMaxRows, M - r0);
      kRows[rows - 1](xt + r0, M, K, panel, out + r0 * N, N, j0, width);
    }
  }
}

ffi::Error PanelGemm(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> packed,
                     ffi::ResultBuffer<ffi::F32> out) {
  auto xd = x.dimensions();
  auto pd = packed.dimensions();
  auto od = out->dimensions();
  if (xd.size() != 2 || pd.size() != 3 || od.size() != 2 || pd[2] != kPanel || pd[1] != xd[0] ||
      od[0] != xd[1] || od[1] > pd[0] * kPanel || od[1] <= (pd[0] - 1) * kPanel)
    return ffi::Error::InvalidArgument(
        "dalle_panel_gemm: expected x [K, M], packed [ceil(N / 16), K, 16] and out [M, N]");
  const int64_t K = xd[0], M = xd[1], N = od[1];
  const int64_t panels = pd[0];
  const float* xt = x.typed_data();
  const float* wp = packed.typed_data();
  float* op = out->typed_data();
  dalle_kernels::ParallelRanges(pool, panels,
                                [=](int64_t p0, int64_t p1) { PanelRange(xt, M, K, wp, op, N, p0, p1); });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(DallePanelGemm, PanelGemm,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
