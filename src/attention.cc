/*!
 * \file attention.cc
 * \brief Fused attention: the ISA choice, scratch sizing and the split of query rows over
 *        OpenMP threads (the kernels are attention_avx512.cc / attention_avx2.cc).
 */
#include "attention.h"

#include <omp.h>

#include <algorithm>

#include "common.h"

namespace tvm_onednn {
namespace {

int64_t RoundUp(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

bool HasIsa(dnnl::cpu_isa isa) {
  int have = static_cast<int>(dnnl::get_effective_cpu_isa());
  return (have & static_cast<int>(isa)) == static_cast<int>(isa);
}

/*! \brief Vector width (floats) and key block of the kernel that runs here; 0 if none. */
struct KernelGeometry {
  int width = 0;
  int key_block = 0;
};

KernelGeometry Geometry() {
  static const KernelGeometry geometry = [] {
    KernelGeometry g;
#if defined(__x86_64__) && defined(__GNUC__)
    if (HasIsa(dnnl::cpu_isa::avx512_core)) {
      g = {16, 64};
    } else if (HasIsa(dnnl::cpu_isa::avx2) && __builtin_cpu_supports("fma")) {
      g = {8, 16};
    }
#endif
    return g;
  }();
  return geometry;
}

}  // namespace

const char* AttentionIsa() {
  switch (Geometry().width) {
    case 16:
      return "avx512";
    case 8:
      return "avx2";
    default:
      return "";
  }
}

size_t AttentionThreadFloats(const AttentionShape& shape, int key_block, int width) {
  int64_t skp = RoundUp(shape.sk, key_block), dvp = RoundUp(shape.dv, width);
  return static_cast<size_t>(RoundUp(shape.d * skp, 16) + RoundUp(shape.sk * dvp, 16) +
                             RoundUp(kAttentionRows * skp, 16) + 16);
}

size_t AttentionScratchBytes(const AttentionShape& shape, int max_threads) {
  KernelGeometry g = Geometry();
  return AttentionThreadFloats(shape, g.key_block, g.width) * sizeof(float) *
         static_cast<size_t>(std::max(1, max_threads));
}

void RunAttention(const AttentionShape& shape, const AttentionData& data, void* scratch,
                  int max_threads) {
  KernelGeometry g = Geometry();
  int64_t lead = 1;
  for (int i = 0; i < shape.num_lead; ++i) lead *= shape.lead[i];
  const int64_t rows = lead * shape.sq;
  const size_t per_thread = AttentionThreadFloats(shape, g.key_block, g.width);
  // at least two tiles of rows per thread, and never more threads than the scratch was sized for
  int64_t by_rows = std::max<int64_t>(1, rows / (2 * kAttentionRows));
  int threads = static_cast<int>(
      std::min<int64_t>({static_cast<int64_t>(std::max(1, max_threads)),
                         static_cast<int64_t>(omp_get_max_threads()), by_rows}));
  void (*kernel)(const AttentionWork&) = g.width == 16 ? AttentionRowsAvx512 : AttentionRowsAvx2;
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    int t = omp_get_thread_num(), nt = omp_get_num_threads();
    AttentionWork work;
    work.shape = &shape;
    work.data = &data;
    work.row_begin = rows * t / nt;
    work.row_end = rows * (t + 1) / nt;
    work.scratch = static_cast<float*>(scratch) + per_thread * static_cast<size_t>(t);
    if (work.row_end > work.row_begin) kernel(work);
  }
}

}  // namespace tvm_onednn
