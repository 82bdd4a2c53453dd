/*!
 * \file attention_avx512.cc
 * \brief The fused attention kernel for AVX-512 (compiled with -mavx512f -mavx512dq -mfma;
 *        run only when oneDNN reports avx512_core). Vectors of 16 floats; score blocks of
 *        6 rows x 64 keys and output blocks of 6 rows x up to 64 columns in 24 registers;
 *        2^n by vscalefps.
 */
#include <immintrin.h>

#include "attention.h"

// GCC 12's avx512fintrin.h: false "may be used uninitialized" on its _mm512_undefined_*
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace tvm_onednn {
namespace {

struct Avx512 {
  using Vec = __m512;
  static constexpr int kWidth = 16;
  static constexpr int kScoreVecs = 4;
  static constexpr int kOutVecs = 4;

  using Index = __m512i;
  static Index Strides(int s) {
    return _mm512_mullo_epi32(_mm512_set1_epi32(s), _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8,
                                                                       9, 10, 11, 12, 13, 14, 15));
  }
  static Vec Gather(const float* p, Index index) { return _mm512_i32gather_ps(index, p, 4); }
  static Vec Zero() { return _mm512_setzero_ps(); }
  static Vec Set1(float x) { return _mm512_set1_ps(x); }
  static Vec Load(const float* p) { return _mm512_loadu_ps(p); }
  static void Store(float* p, Vec v) { _mm512_storeu_ps(p, v); }
  static void StorePartial(float* p, Vec v, int n) {
    _mm512_mask_storeu_ps(p, static_cast<__mmask16>((1u << n) - 1u), v);
  }
  static Vec Fma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
  static Vec Add(Vec a, Vec b) { return _mm512_add_ps(a, b); }
  static Vec Sub(Vec a, Vec b) { return _mm512_sub_ps(a, b); }
  static Vec Mul(Vec a, Vec b) { return _mm512_mul_ps(a, b); }
  static Vec Max(Vec a, Vec b) { return _mm512_max_ps(a, b); }
  static float ReduceMax(Vec v) { return _mm512_reduce_max_ps(v); }
  static float ReduceAdd(Vec v) { return _mm512_reduce_add_ps(v); }

  static Vec Fnmadd(Vec a, Vec b, Vec c) { return _mm512_fnmadd_ps(a, b, c); }
  static Vec Round(Vec v) {
    return _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  static Vec Scale2(Vec p, Vec n) { return _mm512_scalef_ps(p, n); }
  static Vec ZeroBelow(Vec x, Vec lo, Vec y) {
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ), y, Zero());
  }
};

#include "attention_kernel.h"

/*! \brief AttentionKernelEntry::rows of this ISA. */
void RowsAvx512(const AttentionWork& work) {
  AttentionKernel<Avx512>(*work.shape, *work.data, work.scratch).Rows(work.row_begin, work.row_end);
}

}  // namespace

extern const AttentionKernelEntry kAttentionAvx512 = {
    "avx512", &AttentionKernel<Avx512>::ThreadFloats, &RowsAvx512};

}  // namespace tvm_onednn
