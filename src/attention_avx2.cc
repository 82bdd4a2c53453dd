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

  /*!
   * \brief e^x for x <= 0 as in attention_avx512.cc, with 2^n built in the exponent bits
   *        (n is in [-126, 0] after the clamp, so it is always a normal float).
   */
  static Vec Exp(Vec x) {
    const Vec lo = Set1(-87.33654f);
    Vec xc = _mm256_max_ps(lo, x);
    Vec n = _mm256_round_ps(_mm256_mul_ps(xc, Set1(1.44269504f)),
                            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    Vec r = _mm256_fnmadd_ps(n, Set1(0.693359375f), xc);
    r = _mm256_fnmadd_ps(n, Set1(-2.12194440e-4f), r);
    Vec p = Set1(1.9875691500e-4f);
    p = Fma(p, r, Set1(1.3981999507e-3f));
    p = Fma(p, r, Set1(8.3334519073e-3f));
    p = Fma(p, r, Set1(4.1665795894e-2f));
    p = Fma(p, r, Set1(1.6666665459e-1f));
    p = Fma(p, r, Set1(5.0000001201e-1f));
    p = Fma(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, Set1(1.f)));
    __m256i bits = _mm256_slli_epi32(
        _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    Vec y = _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
    return _mm256_blendv_ps(y, Zero(), _mm256_cmp_ps(x, lo, _CMP_LT_OQ));
  }
};

#include "attention_kernel.h"

}  // namespace

void AttentionRowsAvx2(const AttentionWork& work) {
  AttentionKernel<Avx2>(*work.shape, *work.data, work.scratch).Rows(work.row_begin, work.row_end);
}

}  // namespace tvm_onednn
