/*!
 * \file attention.h
 * \brief Fused float32 attention: out = softmax(scale * (q @ k) + mask) @ v in one pass per
 *        query-row tile, the scores never leaving the thread's cache.
 *
 * The planner (plan.cc) runs this instead of the three oneDNN primitives of a
 * `matmul[_add] -> softmax -> matmul` chain whose intermediates are read by nothing else.
 * Per (batch, head) a thread packs k (as [D, Sk], padded) and v (as [Sk, Dv], padded) once;
 * per tile of query rows it computes the scores in registers, adds the mask, takes the row
 * softmax (max, exp, sum), multiplies by v and scales each row by 1 / sum on the store.
 * Kernels: AVX-512 and AVX2 + FMA (attention_avx512.cc / attention_avx2.cc), chosen by the ISA
 * oneDNN reports (so ONEDNN_MAX_CPU_ISA caps it); without AVX2 the chain stays three oneDNN
 * primitives.
 */
#ifndef TVM_ONEDNN_ATTENTION_H_
#define TVM_ONEDNN_ATTENTION_H_

#include <cstddef>
#include <cstdint>

namespace tvm_onednn {

/*! \brief At most this many leading (batch, head, ...) dims. */
constexpr int kAttentionMaxLead = 4;
/*! \brief Query rows per tile (the register block of both products). */
constexpr int kAttentionRows = 6;

/*! \brief Element strides of one operand: per leading dim (0 where it broadcasts), row, column. */
struct AttentionStrides {
  int64_t lead[kAttentionMaxLead] = {0, 0, 0, 0};
  int64_t row = 0;
  int64_t col = 0;
};

/*!
 * \brief One fused attention call. Logical shapes, with L the leading dims:
 *        q [L, Sq, D], k [L, D, Sk] (the transposed keys, as the first matmul reads them),
 *        v [L, Sk, Dv], mask (optional) broadcastable to [L, Sq, Sk], out [L, Sq, Dv] with
 *        out.col == 1.
 */
struct AttentionShape {
  int num_lead = 0;
  int64_t lead[kAttentionMaxLead] = {1, 1, 1, 1};
  int64_t sq = 0, sk = 0, d = 0, dv = 0;
  float scale = 1.f;
  bool has_mask = false;
  /*! \brief A row whose softmax is not finite (all -inf, a NaN) yields zeros, not NaN. */
  bool nan_to_zero = false;
  AttentionStrides q, k, v, mask, out;
};

struct AttentionData {
  const float* q = nullptr;
  const float* k = nullptr;
  const float* v = nullptr;
  const float* mask = nullptr;
  float* out = nullptr;
};

/*! \brief "avx512" or "avx2": the kernel this CPU runs (oneDNN's ISA), "" if none. */
const char* AttentionIsa();
/*! \brief Scratch bytes one call needs with up to `max_threads` threads. */
size_t AttentionScratchBytes(const AttentionShape& shape, int max_threads);
/*!
 * \brief Run one call on up to `max_threads` OpenMP threads (the scratch was sized for them).
 *        Requires AttentionIsa() != "".
 */
void RunAttention(const AttentionShape& shape, const AttentionData& data, void* scratch,
                  int max_threads);

/*! \brief Per-thread work of RunAttention for one ISA: query rows [row_begin, row_end) of the
 *         flattened [L, Sq] rows, with `scratch` this thread's own. */
struct AttentionWork {
  const AttentionShape* shape;
  const AttentionData* data;
  int64_t row_begin, row_end;
  float* scratch;
};
/*! \brief One ISA's kernel: its name, one thread's scratch (floats) and its rows' work. */
struct AttentionKernelEntry {
  const char* isa;
  size_t (*thread_floats)(const AttentionShape& shape);
  void (*rows)(const AttentionWork& work);
};
extern const AttentionKernelEntry kAttentionAvx512;  // attention_avx512.cc
extern const AttentionKernelEntry kAttentionAvx2;    // attention_avx2.cc

}  // namespace tvm_onednn

#endif  // TVM_ONEDNN_ATTENTION_H_
