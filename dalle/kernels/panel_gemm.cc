// Few-row float32 matmul against a weight matrix packed into column panels, as XLA FFI custom calls.
//
//   x     [K, M]         the M input rows, transposed (M is small: 1-16 rows per decode step), float32
//   packed [P, K, 16]    weight column panels: packed[p, k, c] = W[k, 16 p + c] (zero beyond N), float32
//                        (DallePanelGemm) or bfloat16 (DallePanelGemmBf16)
//   out   [M, N]         x^T W,  N <= 16 P, float32
//
// Each panel is one contiguous stream of K * 64 bytes (K * 32 in bfloat16), read once for up to 16 rows at a time
// with one 16-float accumulator per row; panels are split between the threads of XLA's intra-op pool. A bfloat16
// weight is the top half of a float32: it is widened in registers (a 16-bit shift) and accumulated in float32.
// Built by panel_gemm.py.
#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <type_traits>
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

// bfloat16 weights as stored: the upper 16 bits of a float32.
using Bf16 = uint16_t;

inline float Bf16ToFloat(Bf16 h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// W is float (float32 panels) or Bf16 (bfloat16 panels); the float instantiation is the original float32 kernel.
template <int R, typename W>
void PanelRows(const float* xt, int64_t M, int64_t K, const W* panel, float* out, int64_t N, int64_t j0,
               int64_t width) {
#if defined(__AVX512F__)
  __m512 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  // Prefetch 2 KiB ahead in both layouts: 32 float32 or 64 bfloat16 steps of K.
  constexpr int64_t kAhead = 32 * sizeof(float) / sizeof(W);
  for (int64_t k = 0; k < K; ++k) {
    _mm_prefetch(reinterpret_cast<const char*>(panel + (k + kAhead) * kPanel), _MM_HINT_T0);
    __m512 w;
    if constexpr (sizeof(W) == sizeof(float)) {
      w = _mm512_loadu_ps(panel + k * kPanel);
    } else {
      const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(panel + k * kPanel));
      w = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
    const float* xk = xt + k * M;
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(xk[r]), w, acc[r]);
  }
  const __mmask16 mask = width >= kPanel ? 0xFFFF : static_cast<__mmask16>((1u << width) - 1);
  for (int r = 0; r < R; ++r) _mm512_mask_storeu_ps(out + r * N + j0, mask, acc[r]);
#else
  float acc[R][kPanel] = {};
  for (int64_t k = 0; k < K; ++k) {
    const float* w;
    float widened[kPanel];
    if constexpr (sizeof(W) == sizeof(float)) {
      w = panel + k * kPanel;
    } else {
      for (int c = 0; c < kPanel; ++c) widened[c] = Bf16ToFloat(panel[k * kPanel + c]);
      w = widened;
    }
    const float* xk = xt + k * M;
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < kPanel; ++c) acc[r][c] += xk[r] * w[c];
  }
  for (int r = 0; r < R; ++r)
    for (int64_t c = 0; c < width; ++c) out[r * N + j0 + c] = acc[r][c];
#endif
}

template <typename W>
using RowsFn = void (*)(const float*, int64_t, int64_t, const W*, float*, int64_t, int64_t, int64_t);

template <typename W, int... Rs>
constexpr auto MakeTable(std::integer_sequence<int, Rs...>) {
  return std::array<RowsFn<W>, sizeof...(Rs)>{&PanelRows<Rs + 1, W>...};
}

template <typename W>
const auto kRows = MakeTable<W>(std::make_integer_sequence<int, kMaxRows>{});

template <typename W>
void PanelRange(const float* xt, int64_t M, int64_t K, const W* packed, float* out, int64_t N, int64_t p0,
                int64_t p1) {
  for (int64_t p = p0; p < p1; ++p) {
    const W* panel = packed + p * K * kPanel;
    const int64_t j0 = p * kPanel;
    const int64_t width = std::min(kPanel, N - j0);
    for (int64_t r0 = 0; r0 < M; r0 += kMaxRows) {
      const int64_t rows = std::min(kMaxRows, M - r0);
      kRows<W>[rows - 1](xt + r0, M, K, panel, out + r0 * N, N, j0, width);
    }
  }
}

// T: the FFI element type of the packed weights (F32 or BF16, whose buffers hold uint16_t bit patterns).
template <ffi::DataType T>
ffi::Error PanelGemm(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<T> packed,
                     ffi::ResultBuffer<ffi::F32> out) {
  using W = std::conditional_t<T == ffi::F32, float, Bf16>;
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
  const W* wp = reinterpret_cast<const W*>(packed.typed_data());
  float* op = out->typed_data();
  dalle_kernels::ParallelRanges(pool, panels,
                                [=](int64_t p0, int64_t p1) { PanelRange<W>(xt, M, K, wp, op, N, p0, p1); });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(DallePanelGemm, PanelGemm<ffi::F32>,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(DallePanelGemmBf16, PanelGemm<ffi::BF16>,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::BF16>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
