/*!
 * \file attention_kernel.h
 * \brief The fused attention kernel, written once over a vector-traits class `V` and
 *        instantiated by attention_avx512.cc and attention_avx2.cc, each compiled for its ISA.
 *
 * Include only from those files, after defining the traits, inside their anonymous
 * namespace: nothing here may be emitted as a symbol another file could link to (code built
 * for AVX-512 must never run on a CPU without it), so this header includes no standard
 * library header and uses no standard library template.
 *
 * V provides: `Vec`, kWidth (floats per vector), kScoreVecs (vectors per score block),
 * kOutVecs (most output vectors per block), Zero, Set1, Load, Store, StorePartial(p, v, n),
 * Fma(a, b, c) = a * b + c, Fnmadd(a, b, c) = c - a * b, Add, Sub, Mul, Max (the second
 * operand when one is NaN, as vmaxps), Round (to nearest), Scale2(p, n) = p * 2^n for integral
 * n in [-126, 0], ZeroBelow(x, lo, y) = 0 where x < lo else y, ReduceMax, ReduceAdd, and
 * `Index`, Strides(s) = {0, s, 2s, ...}, Gather(p, index) = {p[index[i]]}.
 */

/*!
 * \brief e^x for x <= 0 (scores minus their row maximum), relative error ~2 ulp:
 *        x = n ln2 + r, |r| <= ln2 / 2, Cephes' polynomial for e^r, then 2^n. Below
 *        ln(FLT_MIN) the result is 0 (no denormal reaches the products with v); a NaN stays
 *        NaN (Max returns it).
 */
template <class V>
typename V::Vec ExpNonPositive(typename V::Vec x) {
  using Vec = typename V::Vec;
  const Vec lo = V::Set1(-87.33654f);
  Vec xc = V::Max(lo, x);
  Vec n = V::Round(V::Mul(xc, V::Set1(1.44269504f)));
  Vec r = V::Fnmadd(n, V::Set1(0.693359375f), xc);
  r = V::Fnmadd(n, V::Set1(-2.12194440e-4f), r);
  Vec p = V::Set1(1.9875691500e-4f);
  p = V::Fma(p, r, V::Set1(1.3981999507e-3f));
  p = V::Fma(p, r, V::Set1(8.3334519073e-3f));
  p = V::Fma(p, r, V::Set1(4.1665795894e-2f));
  p = V::Fma(p, r, V::Set1(1.6666665459e-1f));
  p = V::Fma(p, r, V::Set1(5.0000001201e-1f));
  p = V::Fma(p, V::Mul(r, r), V::Add(r, V::Set1(1.f)));
  return V::ZeroBelow(x, lo, V::Scale2(p, n));
}

template <class V>
class AttentionKernel {
 public:
  using Vec = typename V::Vec;
  static constexpr int kW = V::kWidth;
  static constexpr int kR = kAttentionRows;
  static constexpr int kKeyBlock = V::kScoreVecs * V::kWidth;

  /*!
   * \brief One thread's scratch, in floats from its start (each part 64-byte aligned): packed
   *        k [D, Sk'] (keys padded to kKeyBlock), packed v [Sk, Dv'] (columns padded to kW),
   *        the score tile [kR, Sk'] and its row factors.
   */
  struct Layout {
    int64_t skp, dvp, vp, tile, inv, floats;
  };
  static Layout LayoutOf(const AttentionShape& s) {
    Layout l;
    l.skp = RoundUp(s.sk, kKeyBlock);
    l.dvp = RoundUp(s.dv, kW);
    l.vp = RoundUp(s.d * l.skp, 16);
    l.tile = l.vp + RoundUp(s.sk * l.dvp, 16);
    l.inv = l.tile + RoundUp(kR * l.skp, 16);
    l.floats = l.inv + RoundUp(kR, 16);
    return l;
  }
  static size_t ThreadFloats(const AttentionShape& s) {
    return static_cast<size_t>(LayoutOf(s).floats);
  }

  AttentionKernel(const AttentionShape& s, const AttentionData& x, float* scratch)
      : s_(s), x_(x) {
    Layout l = LayoutOf(s);
    skp_ = l.skp;
    dvp_ = l.dvp;
    kt_ = scratch;
    vp_ = scratch + l.vp;
    tile_ = scratch + l.tile;
    inv_ = scratch + l.inv;
  }

  /*! \brief Output rows [begin, end) of the flattened [L, Sq] rows. */
  void Rows(int64_t begin, int64_t end) {
    int64_t g = begin;
    while (g < end) {
      int64_t lead = g / s_.sq, r0 = g % s_.sq;
      int64_t r_end = Min(s_.sq, r0 + (end - g));
      Offsets(lead);
      PackKeys();
      PackValues();
      for (int64_t r = r0; r < r_end; r += kR) Tile(r, static_cast<int>(Min(kR, r_end - r)));
      g += r_end - r0;
    }
  }

 private:
  static int64_t RoundUp(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

  /*!
   * \brief acc[r][c] += a(r, k) * b[k * b_step + c * kW] for k < count: the register block of
   *        both products (q . kᵀ over D, probabilities . v over Sk), rank-1 updates.
   */
  template <int kN, class A>
  static void Accumulate(Vec (&acc)[kR][kN], int64_t count, const float* b, int64_t b_step,
                         A a) {
    for (int64_t k = 0; k < count; ++k, b += b_step) {
      Vec bv[kN];
#pragma GCC unroll 8
      for (int c = 0; c < kN; ++c) bv[c] = V::Load(b + c * kW);
#pragma GCC unroll 8
      for (int r = 0; r < kR; ++r) {
        Vec av = V::Set1(a(r, k));
#pragma GCC unroll 8
        for (int c = 0; c < kN; ++c) acc[r][c] = V::Fma(av, bv[c], acc[r][c]);
      }
    }
  }

  template <int kN>
  static void ZeroAll(Vec (&acc)[kR][kN]) {
#pragma GCC unroll 8
    for (int r = 0; r < kR; ++r) {
#pragma GCC unroll 8
      for (int c = 0; c < kN; ++c) acc[r][c] = V::Zero();
    }
  }
  static int64_t Min(int64_t a, int64_t b) { return a < b ? a : b; }

  /*! \brief Base pointers of leading index `lead` (row-major over the leading dims). */
  void Offsets(int64_t lead) {
    int64_t oq = 0, ok = 0, ov = 0, om = 0, oo = 0;
    for (int i = s_.num_lead - 1; i >= 0; --i) {
      int64_t idx = lead % s_.lead[i];
      lead /= s_.lead[i];
      oq += idx * s_.q.lead[i];
      ok += idx * s_.k.lead[i];
      ov += idx * s_.v.lead[i];
      om += idx * s_.mask.lead[i];
      oo += idx * s_.out.lead[i];
    }
    q_ = x_.q + oq;
    k_ = x_.k + ok;
    v_ = x_.v + ov;
    mask_ = s_.has_mask ? x_.mask + om : nullptr;
    out_ = x_.out + oo;
  }

  /*! \brief kt[d][j] = k[d, j], zero for padding keys j >= Sk. */
  void PackKeys() {
    const int64_t d_n = s_.d, sk = s_.sk, rs = s_.k.row, cs = s_.k.col;
    int64_t j = 0;
    if (rs == 1 && cs * kW < (int64_t{1} << 31)) {
      // each key's D values are contiguous (a transposed view): gather kW keys per vector
      const typename V::Index index = V::Strides(static_cast<int>(cs));
      for (; j + kW <= sk; j += kW) {
        const float* src = k_ + j * cs;
        for (int64_t d = 0; d < d_n; ++d) V::Store(kt_ + d * skp_ + j, V::Gather(src + d, index));
      }
    }
    for (int64_t d = 0; d < d_n; ++d) {
      const float* src = k_ + d * rs;
      float* dst = kt_ + d * skp_;
      for (int64_t jj = j; jj < sk; ++jj) dst[jj] = src[jj * cs];
      for (int64_t jj = sk; jj < skp_; ++jj) dst[jj] = 0.f;
    }
  }

  /*! \brief vp[j][c] = v[j, c], zero for padding columns c >= Dv (packed: reading v's rows in
   *         place, 1.5 KB apart in MiniLM, was 10 % slower). */
  void PackValues() {
    const int64_t dv = s_.dv, full = s_.v.col == 1 ? dv / kW * kW : 0;
    for (int64_t j = 0; j < s_.sk; ++j) {
      const float* src = v_ + j * s_.v.row;
      float* dst = vp_ + j * dvp_;
      for (int64_t c = 0; c < full; c += kW) V::Store(dst + c, V::Load(src + c));
      for (int64_t c = full; c < dv; ++c) dst[c] = src[c * s_.v.col];
      for (int64_t c = dv; c < dvp_; ++c) dst[c] = 0.f;
    }
  }

  /*! \brief Query rows [r0, r0 + nr): scores, softmax, then the product with v. */
  void Tile(int64_t r0, int nr) {
    const float* q_rows[kR];
    const float* mask_rows[kR];
    for (int r = 0; r < kR; ++r) {
      int64_t row = r0 + (r < nr ? r : nr - 1);  // rows past the end repeat the last one
      q_rows[r] = q_ + row * s_.q.row;
      mask_rows[r] = mask_ != nullptr ? mask_ + row * s_.mask.row : nullptr;
    }
    for (int r = 0; r < kR; ++r) row_max_[r] = V::Set1(-__builtin_inff());
    for (int64_t jb = 0; jb < skp_; jb += kKeyBlock) ScoreBlock(q_rows, mask_rows, jb);
    for (int r = 0; r < kR; ++r) Softmax(r);
    for (int64_t c0 = 0; c0 < dvp_; c0 += V::kOutVecs * kW) {
      int64_t vecs = Min(V::kOutVecs, (dvp_ - c0) / kW);
      if (vecs == V::kOutVecs) {
        OutBlock<V::kOutVecs>(r0, nr, c0);
      } else if (vecs == 1) {
        OutBlock<1>(r0, nr, c0);
      } else if constexpr (V::kOutVecs > 2) {
        if (vecs == 2) {
          OutBlock<2>(r0, nr, c0);
        } else {
          OutBlock<3>(r0, nr, c0);
        }
      }
    }
  }

  /*!
   * \brief tile[r][jb, jb + kKeyBlock) = scale * (q_r . k[:, j]) + mask, -inf for padding;
   *        row_max_[r] takes the block's maximum.
   */
  void ScoreBlock(const float* const* q_rows, const float* const* mask_rows, int64_t jb) {
    constexpr int kN = V::kScoreVecs;
    Vec acc[kR][kN];
    ZeroAll(acc);
    const int64_t qc = s_.q.col;
    Accumulate(acc, s_.d, kt_ + jb, skp_, [&](int r, int64_t d) { return q_rows[r][d * qc]; });
    const Vec scale = V::Set1(s_.scale);
#pragma GCC unroll 8
    for (int r = 0; r < kR; ++r) {
      float* dst = tile_ + r * skp_ + jb;
      Vec m = row_max_[r];
#pragma GCC unroll 8
      for (int c = 0; c < kN; ++c) {
        int64_t j0 = jb + c * kW;
        Vec val = mask_rows[r] != nullptr
                      ? V::Fma(acc[r][c], scale, MaskVector(mask_rows[r], j0))
                      : V::Mul(acc[r][c], scale);
        V::Store(dst + c * kW, val);
        if (j0 + kW <= s_.sk) m = V::Max(m, val);
      }
      row_max_[r] = m;
    }
    if (jb + kKeyBlock > s_.sk) {  // padding keys: -inf, and the partial vector's real lanes
      const float neg_inf = -__builtin_inff();
      for (int r = 0; r < kR; ++r) {
        float* row = tile_ + r * skp_;
        int64_t j0 = s_.sk / kW * kW;
        for (int64_t j = s_.sk; j < jb + kKeyBlock; ++j) row[j] = neg_inf;
        if (j0 < s_.sk && j0 >= jb) row_max_[r] = V::Max(row_max_[r], V::Load(row + j0));
      }
    }
  }

  /*! \brief mask_row[j0, j0 + kW) (zeros past Sk; any column stride). */
  Vec MaskVector(const float* mask_row, int64_t j0) const {
    const int64_t cs = s_.mask.col;
    if (cs == 1 && j0 + kW <= s_.sk) return V::Load(mask_row + j0);
    alignas(64) float tmp[kW];
    for (int i = 0; i < kW; ++i) {
      int64_t j = j0 + i;
      tmp[i] = j < s_.sk ? mask_row[j * cs] : 0.f;
    }
    return V::Load(tmp);
  }

  /*!
   * \brief Row r of the tile becomes exp(x - max) (max from row_max_); inv_[r] = 1 / sum. A
   *        row that is not finite: zeros and 0 under nan_to_zero, else NaN propagates.
   */
  void Softmax(int r) {
    float* row = tile_ + r * skp_;
    const Vec mx = V::Set1(V::ReduceMax(row_max_[r]));
    Vec sum = V::Zero();
    for (int64_t j = 0; j < skp_; j += kW) {
      Vec e = ExpNonPositive<V>(V::Sub(V::Load(row + j), mx));
      V::Store(row + j, e);
      sum = V::Add(sum, e);
    }
    float total = V::ReduceAdd(sum);
    bool finite = total == total && total < __builtin_inff();
    if (!finite && s_.nan_to_zero) {
      for (int64_t j = 0; j < skp_; ++j) row[j] = 0.f;
      inv_[r] = 0.f;
      return;
    }
    inv_[r] = 1.f / total;
  }

  /*! \brief out[r0 + r][c0, c0 + kN * kW) = inv_[r] * (tile[r] . vp[:, c]). */
  template <int kN>
  void OutBlock(int64_t r0, int nr, int64_t c0) {
    Vec acc[kR][kN];
    ZeroAll(acc);
    const float* tile = tile_;
    const int64_t skp = skp_;
    Accumulate(acc, s_.sk, vp_ + c0, dvp_, [&](int r, int64_t j) { return tile[r * skp + j]; });
    for (int r = 0; r < nr; ++r) {
      float* dst = out_ + (r0 + r) * s_.out.row;
      const Vec inv = V::Set1(inv_[r]);
#pragma GCC unroll 8
      for (int c = 0; c < kN; ++c) {
        int64_t col = c0 + c * kW;
        Vec val = V::Mul(acc[r][c], inv);
        if (col + kW <= s_.dv) {
          V::Store(dst + col, val);
        } else if (col < s_.dv) {
          V::StorePartial(dst + col, val, static_cast<int>(s_.dv - col));
        }
      }
    }
  }

  const AttentionShape& s_;
  const AttentionData& x_;
  int64_t skp_ = 0, dvp_ = 0;
  float* kt_ = nullptr;
  float* vp_ = nullptr;
  float* tile_ = nullptr;
  float* inv_ = nullptr;
  Vec row_max_[kR];  // per tile row: lane-wise maximum of its scores so far
  const float* q_ = nullptr;
  const float* k_ = nullptr;
  const float* v_ = nullptr;
  const float* mask_ = nullptr;
  float* out_ = nullptr;
};
