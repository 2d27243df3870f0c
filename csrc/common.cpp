#include "pyssl/common.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace pyssl {

namespace {
int g_threads = 0;  // 0: OpenMP's default
}

int num_threads() {
#ifdef _OPENMP
  return g_threads > 0 ? g_threads : omp_get_max_threads();
#else
  return 1;
#endif
}

void set_num_threads(int n) {
  check(n >= 1, "num_threads: expected a positive thread count, got " + std::to_string(n));
  g_threads = n;
}

}  // namespace pyssl
