/*!
 * \file attention_avx2.cc
 * \brief The fused attention kernel for AVX2 + FMA (compiled with -mavx2 -mfma; run only when
 *        oneDNN reports avx2 or better and the CPU has FMA). Vectors of 8 floats; score and
 *        output blocks of 6 rows x 16 columns in 12 registers.
 */
#include <immintrin.h>

#include "attention.h"

namespace tvm_onednn {
namespace {

struct Avx2 {
  using Vec = __m256;
  static constexpr int kWidth = 8;
  static constexpr int kScoreVecs = 2;
  static constexpr int kOutVecs = 2;

  using Index = __m256i;
  static Index Strides(int s) {
    return _mm256_mullo_epi32(_mm256_set1_epi32(s), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static Vec Gather(const float* p, Index index) { return _mm256_i32gather_ps(p, index, 4); }
  static Vec Zero() { return _mm256_setzero_ps(); }
  static Vec Set1(float x) { return _mm256_set1_ps(x); }
  static Vec Load(const float* p) { return _mm256_loadu_ps(p); }
  static void Store(float* p, Vec v) { _mm256_storeu_ps(p, v); }
  static void StorePartial(float* p, Vec v, int n) {
    __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    _mm256_maskstore_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32(n), lanes), v);
  }
  static Vec Fma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
  static Vec Add(Vec a, Vec b) { return _mm256_add_ps(a, b); }
  static Vec Sub(Vec a, Vec b) { return _mm256_sub_ps(a, b); }
  static Vec Mul(Vec a, Vec b) { return _mm256_mul_ps(a, b); }
  static Vec Max(Vec a, Vec b) { return _mm256_max_ps(a, b); }
  static float ReduceMax(Vec v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
  }
  static float ReduceAdd(Vec v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }

  static Vec Fnmadd(Vec a, Vec b, Vec c) { return _mm256_fnmadd_ps(a, b, c); }
  static Vec Round(Vec v) {
    return _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  /*! \brief p * 2^n built in the exponent bits (n in [-126, 0]: always a normal float). */
  static Vec Scale2(Vec p, Vec n) {
    __m256i bits = _mm256_slli_epi32(
        _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
  }
  static Vec ZeroBelow(Vec x, Vec lo, Vec y) {
    return _mm256_blendv_ps(y, Zero(), _mm256_cmp_ps(x, lo, _CMP_LT_OQ));
  }
};

#include "attention_kernel.h"

/*! \brief AttentionKernelEntry::rows of this ISA. */
void RowsAvx2(const AttentionWork& work) {
  AttentionKernel<Avx2>(*work.shape, *work.data, work.scratch).Rows(work.row_begin, work.row_end);
}

}  // namespace

extern const AttentionKernelEntry kAttentionAvx2 = {
    "avx2", &AttentionKernel<Avx2>::ThreadFloats, &RowsAvx2};

}  // namespace tvm_onednn
