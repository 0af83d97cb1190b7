// One-query attention against a heads-major KV cache, reading only its filled part (XLA FFI custom calls).
//
//   dalle_cache_scores: q [B, H, D], k [B, H, T, D], length (int32 scalar) -> s [B, H, T]
//                       s[b, h, t] = q[b, h] . k[b, h, t] for t < length, 0 beyond
//   dalle_cache_mix:    w [B, H, T], v [B, H, T, D], length -> o [B, H, D]
//                       o[b, h] = sum_{t < length} w[b, h, t] v[b, h, t]
//
// XLA's batched dots read the whole cache every decode step at ~10 GB/s; positions at or beyond `length` are
// masked anyway (causal attention), so these read only the written part. Masking, scaling and the softmax stay in
// JAX. (b, h) pairs are split between the threads of XLA's intra-op pool. Built by cache_attention.py.
#include <algorithm>
#include <cstdint>

#include "parallel.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// body(i) for every (b, h) pair i, split between the pool's threads.
template <typename F>
void ForEachPair(ffi::ThreadPool& pool, int64_t n, const F& body) {
  dalle_kernels::ParallelRanges(pool, n, [&body](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) body(i);
  });
}

int64_t ClampLength(const ffi::Buffer<ffi::S32>& length, int64_t t_len) {
  return std::max<int64_t>(0, std::min<int64_t>(t_len, length.typed_data()[0]));
}

ffi::Error CacheScores(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k,
                       ffi::Buffer<ffi::S32> length, ffi::ResultBuffer<ffi::F32> s) {
  auto qd = q.dimensions();
  auto kd = k.dimensions();
  auto sd = s->dimensions();
  if (qd.size() != 3 || kd.size() != 4 || sd.size() != 3 || kd[0] != qd[0] || kd[1] != qd[1] ||
      kd[3] != qd[2] || sd[0] != qd[0] || sd[1] != qd[1] || sd[2] != kd[2] || length.element_count() != 1)
    return ffi::Error::InvalidArgument("dalle_cache_scores: expected q [B, H, D], k [B, H, T, D], out [B, H, T]");
  const int64_t D = qd[2], T = kd[2];
  const int64_t n = ClampLength(length, T);
  const float* qp = q.typed_data();
  const float* kp = k.typed_data();
  float* sp = s->typed_data();
  ForEachPair(pool, qd[0] * qd[1], [=](int64_t bh) {
    const float* qv = qp + bh * D;
    const float* kb = kp + bh * T * D;
    float* out = sp + bh * T;
    for (int64_t t = 0; t < n; ++t) {
      const float* kr = kb + t * D;
      float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
      for (int64_t d = 0; d < D; ++d) acc += qv[d] * kr[d];
      out[t] = acc;
    }
    std::fill(out + n, out + T, 0.0f);
  });
  return ffi::Error::Success();
}

ffi::Error CacheMix(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> w, ffi::Buffer<ffi::F32> v,
                    ffi::Buffer<ffi::S32> length, ffi::ResultBuffer<ffi::F32> o) {
  auto wd = w.dimensions();
  auto vd = v.dimensions();
  auto od = o->dimensions();
  if (wd.size() != 3 || vd.size() != 4 || od.size() != 3 || vd[0] != wd[0] || vd[1] != wd[1] ||
      vd[2] != wd[2] || od[0] != wd[0] || od[1] != wd[1] || od[2] != vd[3] || length.element_count() != 1)
    return ffi::Error::InvalidArgument("dalle_cache_mix: expected w [B, H, T], v [B, H, T, D], out [B, H, D]");
  const int64_t T = vd[2], D = vd[3];
  const int64_t n = ClampLength(length, T);
  const float* wp = w.typed_data();
  const float* vp = v.typed_data();
  float* op = o->typed_data();
  ForEachPair(pool, wd[0] * wd[1], [=](int64_t bh) {
    const float* wr = wp + bh * T;
    const float* vb = vp + bh * T * D;
    float* out = op + bh * D;
    std::fill(out, out + D, 0.0f);
    for (int64_t t = 0; t < n; ++t) {
      const float wt = wr[t];
      const float* vr = vb + t * D;
#pragma omp simd
      for (int64_t d = 0; d < D; ++d) out[d] += wt * vr[d];
    }
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(DalleCacheScores, CacheScores,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(DalleCacheMix, CacheMix,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
