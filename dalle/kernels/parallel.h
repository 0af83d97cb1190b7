// Splits [0, n) into one contiguous range per thread of XLA's intra-op pool (the calling thread takes the first)
// and waits for all of them: the work split shared by this package's FFI kernels.
#ifndef DALLE_KERNELS_PARALLEL_H_
#define DALLE_KERNELS_PARALLEL_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <thread>

#include "xla/ffi/api/ffi.h"

namespace dalle_kernels {

// body(begin, end) runs once per non-empty range; it must not throw.
template <typename F>
void ParallelRanges(xla::ffi::ThreadPool& pool, int64_t n, const F& body) {
  const int64_t threads = std::max<int64_t>(1, std::min<int64_t>(pool.num_threads(), n));
  const int64_t per = (n + threads - 1) / threads;
  std::atomic<int64_t> pending(threads - 1);
  for (int64_t t = 1; t < threads; ++t) {
    const int64_t i0 = std::min(n, t * per), i1 = std::min(n, i0 + per);
    pool.Schedule([&body, &pending, i0, i1] {
      if (i0 < i1) body(i0, i1);
      pending.fetch_sub(1, std::memory_order_release);
    });
  }
  if (n > 0) body(0, std::min(n, per));
  while (pending.load(std::memory_order_acquire) > 0) std::this_thread::yield();
}

}  // namespace dalle_kernels

#endif  // DALLE_KERNELS_PARALLEL_H_
