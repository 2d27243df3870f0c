// CPU parallel loops. Work is split statically so that what each index computes never depends
// on the thread count; the callable must not throw (validate before the loop).
#pragma once

#include <cstdint>

#include "pyssl/common.h"

namespace pyssl {

template <typename F>
void parallel_for(int64_t n, F&& f) {
#pragma omp parallel for schedule(static) num_threads(num_threads()) if (n > 1)
  for (int64_t i = 0; i < n; ++i) f(i);
}

// Fixed-size chunks [begin, end) of a range, for loops whose body is too small per index.
template <typename F>
void parallel_chunks(int64_t n, int64_t chunk, F&& f) {
  const int64_t chunks = (n + chunk - 1) / chunk;
  parallel_for(chunks, [&](int64_t c) {
    const int64_t begin = c * chunk;
    const int64_t end = begin + chunk < n ? begin + chunk : n;
    f(begin, end);
  });
}

}  // namespace pyssl
