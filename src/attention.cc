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

bool HasIsa(dnnl::cpu_isa isa) {
  int have = static_cast<int>(dnnl::get_effective_cpu_isa());
  return (have & static_cast<int>(isa)) == static_cast<int>(isa);
}

/*! \brief The kernel this CPU runs (oneDNN's ISA), nullptr without AVX2 + FMA. */
const AttentionKernelEntry* Kernel() {
  static const AttentionKernelEntry* kernel = []() -> const AttentionKernelEntry* {
#if defined(__x86_64__) && defined(__GNUC__)
    if (HasIsa(dnnl::cpu_isa::avx512_core)) return &kAttentionAvx512;
    if (HasIsa(dnnl::cpu_isa::avx2) && __builtin_cpu_supports("fma")) return &kAttentionAvx2;
#endif
    return nullptr;
  }();
  return kernel;
}

}  // namespace

const char* AttentionIsa() { return Kernel() != nullptr ? Kernel()->isa : ""; }

size_t AttentionScratchBytes(const AttentionShape& shape, int max_threads) {
  return Kernel()->thread_floats(shape) * sizeof(float) *
         static_cast<size_t>(std::max(1, max_threads));
}

void RunAttention(const AttentionShape& shape, const AttentionData& data, void* scratch,
                  int max_threads) {
  const AttentionKernelEntry& kernel = *Kernel();
  int64_t lead = 1;
  for (int i = 0; i < shape.num_lead; ++i) lead *= shape.lead[i];
  const int64_t rows = lead * shape.sq;
  const size_t per_thread = kernel.thread_floats(shape);
  // at least two tiles of rows per thread, and never more threads than the scratch was sized for
  int64_t by_rows = std::max<int64_t>(1, rows / (2 * kAttentionRows));
  int threads = static_cast<int>(
      std::min<int64_t>({static_cast<int64_t>(std::max(1, max_threads)),
                         static_cast<int64_t>(omp_get_max_threads()), by_rows}));
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    int t = omp_get_thread_num(), nt = omp_get_num_threads();
    AttentionWork work;
    work.shape = &shape;
    work.data = &data;
    work.row_begin = rows * t / nt;
    work.row_end = rows * (t + 1) / nt;
    work.scratch = static_cast<float*>(scratch) + per_thread * static_cast<size_t>(t);
    if (work.row_end > work.row_begin) kernel.rows(work);
  }
}

}  // namespace tvm_onednn
