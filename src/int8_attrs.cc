/*!
 * \file int8_attrs.cc
 * \brief The `quant` object of int8 nodes: parsing, validation, oneDNN scale attributes and
 *        scale memories; the non-VNNI weight saturation guard.
 */
#include "int8_attrs.h"

#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/map.h>
#include <tvm/ffi/extra/json.h>
#include <tvm/ffi/string.h>

#include <omp.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <atomic>
#include <cfloat>
#include <cmath>

#include "graph.h"

namespace tvm_onednn {

namespace json = ::tvm::ffi::json;
using ::tvm::ffi::Any;
using ::tvm::ffi::String;

namespace {

constexpr const char* kSrcScale = "src_scale";
constexpr const char* kSrcZp = "src_zero_point";
constexpr const char* kWeightScales = "weight_scales";
constexpr const char* kResScale = "residual_scale";
constexpr const char* kResZp = "residual_zero_point";
constexpr const char* kDstScale = "dst_scale";
constexpr const char* kDstZp = "dst_zero_point";
constexpr const char* kSrcDtype = "src_dtype";

std::string Num(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

/*! \brief A scale: a JSON number that is a positive, finite float32 (not rounded to 0 or inf). */
float ParseScale(const Any& v, const std::string& what, const QuantFail& fail) {
  double d = 0;
  if (v.as<bool>().has_value()) {
    fail(what + " must be a number, got bool");
  } else if (auto i = v.as<int64_t>()) {
    d = static_cast<double>(*i);
  } else if (auto f = v.as<double>()) {
    d = *f;
  } else {
    fail(what + " must be a number, got " + JsonTypeName(v));
  }
  if (!(d > 0) || !std::isfinite(d)) {
    fail(what + " must be a positive finite float32, got " + Num(d));
  }
  if (d > FLT_MAX || d < FLT_MIN) {
    fail(what + " = " + Num(d) + " is outside the normal float32 range");
  }
  return static_cast<float>(d);
}

/*! \brief A zero point: a JSON integer (its range is checked against the dtype later). */
int32_t ParseZeroPoint(const Any& v, const std::string& what, const QuantFail& fail) {
  int64_t zp = 0;
  if (v.as<bool>().has_value()) {
    fail(what + " must be an integer, got bool");
  } else if (auto i = v.as<int64_t>()) {
    zp = *i;
  } else if (auto f = v.as<double>(); f.has_value() && std::floor(*f) == *f &&
                                      std::fabs(*f) < 1e9) {
    zp = static_cast<int64_t>(*f);
  } else {
    fail(what + " must be an integer, got " + JsonTypeName(v));
  }
  if (zp < -1000000 || zp > 1000000) fail(what + " = " + std::to_string(zp) + " is out of range");
  return static_cast<int32_t>(zp);
}

/*! \brief `zp` must be representable in `dtype` (u8: 0..255, s8: -128..127); 0 for float32. */
void CheckZeroPointRange(int32_t zp, DType dtype, const std::string& what,
                         const QuantFail& fail) {
  if (!IsInt8(dtype)) {
    if (zp != 0) {
      fail("quant." + what + " is " + std::to_string(zp) +
           ", but that value is float32 (a zero point needs a u8/s8 value)");
    }
    return;
  }
  int lo = dtype == DType::kUInt8 ? 0 : -128, hi = dtype == DType::kUInt8 ? 255 : 127;
  if (zp < lo || zp > hi) {
    fail("quant." + what + " = " + std::to_string(zp) + " is outside the range of " +
         DTypeName(dtype) + " [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  }
}

std::vector<const char*> AllowedKeys(const OpSpec& spec) {
  switch (spec.base) {
    case BaseOp::kQuantize:
      return {kDstScale, kDstZp};
    case BaseOp::kDequantize:
      return {kSrcScale, kSrcZp};
    case BaseOp::kMaxPool2d:
    case BaseOp::kAvgPool2d:
    case BaseOp::kGlobalAvgPool2d:
      return {kSrcScale, kSrcZp, kDstScale, kDstZp};
    case BaseOp::kConv2d:
      if (spec.has_add) {
        return {kSrcScale, kSrcZp, kWeightScales, kResScale, kResZp, kDstScale, kDstZp};
      }
      return {kSrcScale, kSrcZp, kWeightScales, kDstScale, kDstZp};
    case BaseOp::kMatmul:
      if (spec.has_add) {
        return {kSrcScale, kSrcZp, kSrcDtype, kWeightScales, kResScale, kResZp, kDstScale, kDstZp};
      }
      return {kSrcScale, kSrcZp, kSrcDtype, kWeightScales, kDstScale, kDstZp};
    default:
      break;
  }
  return {};
}

std::atomic<int> g_guard_mode{-1};

}  // namespace

QuantParams ParseQuant(const OpSpec& spec, const Any* quant, const QuantFail& fail) {
  QuantParams q;
  if (!spec.quantized) {
    if (quant != nullptr && *quant != nullptr) {
      fail("has a \"quant\" field, but " + spec.name +
           " is a float32 op (int8 ops are onednn.q*, onednn.quantize, onednn.dequantize)");
    }
    return q;
  }
  if (quant == nullptr || *quant == nullptr) {
    fail("is missing required field \"quant\" (an int8 op needs its scales)");
  }
  auto obj = quant->as<json::Object>();
  if (!obj.has_value()) fail("\"quant\" must be a JSON object, got " + JsonTypeName(*quant));
  std::vector<const char*> allowed = AllowedKeys(spec);
  for (const auto& kv : *obj) {
    std::string key(kv.first.cast<String>());
    bool ok = false;
    for (const char* a : allowed) ok = ok || key == a;
    if (!ok) {
      std::string list;
      for (const char* a : allowed) list += std::string(list.empty() ? "" : ", ") + a;
      fail("unknown quant field \"" + key + "\" for " + spec.name + " (allowed: " + list + ")");
    }
  }
  auto get = [&](const char* key) -> std::optional<Any> {
    auto it = obj->find(String(key));
    if (it == obj->end()) return std::nullopt;
    return (*it).second;
  };
  auto scale = [&](const char* key) -> std::optional<float> {
    auto v = get(key);
    if (!v.has_value()) return std::nullopt;
    return ParseScale(*v, std::string("quant.") + key, fail);
  };
  auto zero_point = [&](const char* key) -> int32_t {
    auto v = get(key);
    return v.has_value() ? ParseZeroPoint(*v, std::string("quant.") + key, fail) : 0;
  };
  q.src_zp = zero_point(kSrcZp);
  q.residual_zp = zero_point(kResZp);
  q.dst_zp = zero_point(kDstZp);
  auto src_scale = get(kSrcScale);
  if (src_scale && src_scale->as<String>().has_value()) {
    std::string v(src_scale->cast<String>());
    if (v != "dynamic") {
      fail("quant.src_scale must be a number or \"dynamic\", got the string \"" + v + "\"");
    }
    if (spec.base != BaseOp::kMatmul) {
      fail("quant.src_scale \"dynamic\" (per-call quantization) is supported by onednn.qmatmul* "
           "only");
    }
    if (get(kSrcZp)) {
      fail("quant.src_zero_point must be absent with a dynamic src_scale (it is computed on "
           "every call)");
    }
    q.dynamic_src = true;
    if (auto d = get(kSrcDtype)) {
      auto name = d->as<String>();
      std::string dn = name.has_value() ? std::string(*name) : "";
      if (dn != "uint8" && dn != "int8") {
        fail("quant.src_dtype must be \"uint8\" (asymmetric) or \"int8\" (symmetric), got " +
             (name.has_value() ? "\"" + dn + "\"" : JsonTypeName(*d)));
      }
      q.dynamic_dtype = dn == "uint8" ? DType::kUInt8 : DType::kInt8;
    }
  } else if (get(kSrcDtype)) {
    fail("quant.src_dtype is only valid with \"src_scale\": \"dynamic\" (a static src "
         "has its data's dtype)");
  }
  q.src_scale = q.dynamic_src ? std::nullopt : scale(kSrcScale);
  q.residual_scale = scale(kResScale);
  q.dst_scale = scale(kDstScale);
  if (auto v = get(kWeightScales)) {
    auto arr = v->as<json::Array>();
    if (!arr.has_value()) fail("quant.weight_scales must be a JSON array, got " + JsonTypeName(*v));
    if (arr->size() == 0) fail("quant.weight_scales must not be empty");
    for (size_t i = 0; i < arr->size(); ++i) {
      q.weight_scales.push_back(
          ParseScale((*arr)[i], "quant.weight_scales[" + std::to_string(i) + "]", fail));
    }
  }
  auto need = [&](bool present, const char* key) {
    if (!present) fail("quant is missing required field \"" + std::string(key) + "\"");
  };
  if (spec.base != BaseOp::kQuantize && !q.dynamic_src) need(q.src_scale.has_value(), kSrcScale);
  if (spec.base == BaseOp::kConv2d || spec.base == BaseOp::kMatmul) {
    need(!q.weight_scales.empty(), kWeightScales);
  }
  if (spec.base == BaseOp::kQuantize || spec.IsPool()) need(q.dst_scale.has_value(), kDstScale);
  return q;
}

void ValidateQuant(const Graph& g, const Node& node, const QuantFail& fail) {
  const OpSpec& spec = *node.spec;
  if (!spec.quantized) return;
  const QuantParams& q = node.quant;
  if (q.dynamic_src) {
    const auto& w = g.Info(node.inputs[1]).shape;
    if (IsInt8(node.out.dtype)) {
      fail("a qmatmul with a dynamic src_scale writes float32, not " +
           std::string(DTypeName(node.out.dtype)));
    }
    if (w.size() != 2) {
      fail("a qmatmul with a dynamic src_scale needs a 2-D [K, N] weight, got " + ShapeStr(w));
    }
    if (spec.has_add && IsInt8(g.Info(node.inputs[spec.ResidualIndex()]).dtype)) {
      fail("a qmatmul with a dynamic src_scale adds a float32 residual only");
    }
  }
  if (spec.base == BaseOp::kConv2d || spec.base == BaseOp::kMatmul) {
    const auto& w = g.Info(node.inputs[1]).shape;
    int64_t channels = spec.base == BaseOp::kConv2d ? w[0] : w.back();
    int64_t n = static_cast<int64_t>(q.weight_scales.size());
    if (n != 1 && n != channels) {
      fail("quant.weight_scales has " + std::to_string(n) +
           " entries, expected 1 (per tensor) or " + std::to_string(channels) +
           " (one per output channel " + (spec.base == BaseOp::kConv2d ? "O" : "N") +
           " of weight " + ShapeStr(w) + ")");
    }
    if (spec.has_add) {
      const TensorInfo& r = g.Info(node.inputs[spec.ResidualIndex()]);
      if (IsInt8(r.dtype) && !q.residual_scale) {
        fail("quant is missing required field \"residual_scale\" (the residual is " +
             std::string(DTypeName(r.dtype)) + ")");
      }
      if (!IsInt8(r.dtype) && q.residual_scale) {
        fail("quant.residual_scale is given, but the residual is float32 (added as is)");
      }
    }
  }
  if (spec.base != BaseOp::kQuantize) {
    CheckZeroPointRange(q.src_zp, g.Info(node.inputs[0]).dtype, kSrcZp, fail);
  }
  CheckZeroPointRange(q.dst_zp, node.out.dtype, kDstZp, fail);
  if (spec.has_add) {
    CheckZeroPointRange(q.residual_zp, g.Info(node.inputs[spec.ResidualIndex()]).dtype, kResZp,
                        fail);
  }
  if (spec.base == BaseOp::kMaxPool2d && q.src_scale && q.dst_scale &&
      *q.src_scale != *q.dst_scale) {
    fail("quant.src_scale (" + Num(*q.src_scale) + ") and quant.dst_scale (" +
         Num(*q.dst_scale) + ") must be equal for int8 max pooling (it cannot rescale)");
  }
  if (spec.base == BaseOp::kMaxPool2d && q.src_zp != q.dst_zp) {
    fail("quant.src_zero_point (" + std::to_string(q.src_zp) + ") and quant.dst_zero_point (" +
         std::to_string(q.dst_zp) + ") must be equal for int8 max pooling (it cannot shift)");
  }
  if (spec.base == BaseOp::kAvgPool2d && q.src_zp != 0 && node.attrs.count_include_pad) {
    const NodeAttrs& a = node.attrs;
    bool padded = a.ceil_mode;
    for (int64_t p : a.padding) padded = padded || p > 0;
    if (padded) {
      fail("quant.src_zero_point is " + std::to_string(q.src_zp) +
           ": int8 avg pooling with count_include_pad and padding (or ceil_mode) needs a src "
           "zero point of 0 (oneDNN pads with stored 0, which is not real 0)");
    }
  }
  if (spec.base != BaseOp::kDequantize) {
    if (IsInt8(node.out.dtype) && !q.dst_scale) {
      fail("quant is missing required field \"dst_scale\" (the output is " +
           std::string(DTypeName(node.out.dtype)) + ")");
    }
    if (!IsInt8(node.out.dtype) && q.dst_scale) {
      fail("quant.dst_scale is given, but the output is float32 (written unquantized)");
    }
  }
}

int WeightScalesMask(const Node& node, int weights_ndims) {
  if (node.quant.weight_scales.size() <= 1) return 0;
  if (node.spec->base == BaseOp::kConv2d) {
    // [O, I, KH, KW] -> O; grouped [G, O/G, I, KH, KW] -> G and O/G together.
    return weights_ndims == 5 ? (1 << 0) | (1 << 1) : (1 << 0);
  }
  return 1 << (weights_ndims - 1);  // matmul [.., K, N] -> N
}

void SetConvMatmulScales(const Node& node, int weights_ndims, dnnl::primitive_attr* attr) {
  if (!node.spec->quantized) return;
  attr->set_scales_mask(DNNL_ARG_SRC, 0);
  attr->set_scales_mask(DNNL_ARG_WEIGHTS, WeightScalesMask(node, weights_ndims));
  if (node.quant.dst_scale) attr->set_scales_mask(DNNL_ARG_DST, 0);
}

void SetReorderScales(const Node& node, dnnl::primitive_attr* attr) {
  if (node.spec->base == BaseOp::kQuantize) attr->set_scales_mask(DNNL_ARG_DST, 0);
  if (node.spec->base == BaseOp::kDequantize) attr->set_scales_mask(DNNL_ARG_SRC, 0);
}

void SetZeroPoints(const Node& node, dnnl::primitive_attr* attr) {
  if (!node.spec->quantized || node.spec->IsPool()) return;
  bool dynamic_zp = node.quant.dynamic_src && node.quant.dynamic_dtype == DType::kUInt8;
  if (node.quant.src_zp != 0 || dynamic_zp) attr->set_zero_points_mask(DNNL_ARG_SRC, 0);
  if (node.quant.dst_zp != 0) attr->set_zero_points_mask(DNNL_ARG_DST, 0);
}

std::vector<std::pair<int, int32_t>> ZeroPointArgs(const Node& node) {
  std::vector<std::pair<int, int32_t>> out;
  if (!node.spec->quantized || node.spec->IsPool()) return out;
  if (node.quant.src_zp != 0) {
    out.push_back({DNNL_ARG_ATTR_ZERO_POINTS | DNNL_ARG_SRC, node.quant.src_zp});
  }
  if (node.quant.dst_zp != 0) {
    out.push_back({DNNL_ARG_ATTR_ZERO_POINTS | DNNL_ARG_DST, node.quant.dst_zp});
  }
  return out;
}

std::vector<std::pair<int, std::vector<float>>> ScaleArgs(const Node& node, float weight_factor) {
  std::vector<std::pair<int, std::vector<float>>> out;
  const OpSpec& spec = *node.spec;
  const QuantParams& q = node.quant;
  if (!spec.quantized) return out;
  if (spec.base == BaseOp::kConv2d || spec.base == BaseOp::kMatmul) {
    // a dynamic src scale is a per-call buffer, bound by the planner
    if (!q.dynamic_src) out.push_back({DNNL_ARG_ATTR_SCALES | DNNL_ARG_SRC, {*q.src_scale}});
    std::vector<float> ws = q.weight_scales;
    for (float& s : ws) s *= weight_factor;
    out.push_back({DNNL_ARG_ATTR_SCALES | DNNL_ARG_WEIGHTS, ws});
    if (q.dst_scale) out.push_back({DNNL_ARG_ATTR_SCALES | DNNL_ARG_DST, {*q.dst_scale}});
  } else if (spec.base == BaseOp::kQuantize) {
    out.push_back({DNNL_ARG_ATTR_SCALES | DNNL_ARG_DST, {*q.dst_scale}});
  } else if (spec.base == BaseOp::kDequantize) {
    out.push_back({DNNL_ARG_ATTR_SCALES | DNNL_ARG_SRC, {*q.src_scale}});
  }
  return out;
}

DType QuantSrcDType(const Graph& g, const Node& node) {
  return node.quant.dynamic_src ? node.quant.dynamic_dtype : g.Info(node.inputs[0]).dtype;
}

namespace {

/*!
 * \brief min / max of x and 0, and a sum that is NaN when x holds a NaN or an infinity (v - v;
 *        a NaN never wins a comparison). SIMD lanes, compiled for AVX-512, AVX2 and baseline
 *        x86-64 (picked at load time); one thread's chunk.
 */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
void RangeOf(const float* x, int64_t count, float* lo, float* hi, float* nonfinite) {
  float mn = 0.f, mx = 0.f, bad = 0.f;
#pragma omp simd reduction(min : mn) reduction(max : mx) reduction(+ : bad)
  for (int64_t i = 0; i < count; ++i) {
    float v = x[i];
    mn = v < mn ? v : mn;
    mx = v > mx ? v : mx;
    bad += v - v;
  }
  *lo = mn;
  *hi = mx;
  *nonfinite = bad;
}

/*! \brief q[i] = saturate(rne(x[i] * inv_scale) + zp) into [qlo, qhi], stored as T. */
template <typename T>
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
void QuantizeChunk(const float* x, int64_t count, float inv_scale, float zp, float qlo,
                   float qhi, T* q) {
#pragma omp simd
  for (int64_t i = 0; i < count; ++i) {
    float v = std::nearbyint(x[i] * inv_scale) + zp;
    v = v < qlo ? qlo : v;
    v = v > qhi ? qhi : v;
    q[i] = static_cast<T>(static_cast<int32_t>(v));
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
/*! \brief Whether oneDNN's effective ISA (which ONEDNN_MAX_CPU_ISA caps, e.g. for tests of
 *         the AVX2 path) includes avx512_core (F, BW, DQ, VL): the host kernels follow it. */
bool UseAvx512() {
  static const bool avx512 = (static_cast<int>(dnnl::get_effective_cpu_isa()) &
                              static_cast<int>(dnnl::cpu_isa::avx512_core)) ==
                             static_cast<int>(dnnl::cpu_isa::avx512_core);
  return avx512;
}

#pragma GCC diagnostic push
// GCC 12's avx512fintrin.h: false "may be used uninitialized" on its _mm512_undefined_*
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
/*!
 * \brief QuantizeChunk with AVX-512 (F + BW) for zmm vectors: one rounding conversion
 *        (round-to-nearest-even, the mode of vcvtps2dq), the zero point added as an integer and
 *        a saturating down-convert, 16 values per 5 instructions where the compiler's
 *        vectorization of the portable loop needs ~18. |x * inv_scale| <= 255 (the scale
 *        comes from x's range), so the int32 conversion cannot overflow.
 */
template <bool kUnsigned>
__attribute__((target("avx512f,avx512bw"), always_inline)) inline __m512i ToInt32Avx512(
    __m512 v, __m512 inv, __m512i zero_point) {
  __m512i i32 = _mm512_cvt_roundps_epi32(_mm512_mul_ps(v, inv),
                                         _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  // u8: clamp at 0 here, the unsigned saturation clamps at 255; s8: the signed saturation
  if (!kUnsigned) return i32;
  return _mm512_max_epi32(_mm512_add_epi32(i32, zero_point), _mm512_setzero_si512());
}

template <bool kUnsigned>
__attribute__((target("avx512f,avx512bw"))) void QuantizeChunkAvx512(const float* x,
                                                                     int64_t count,
                                                                     float inv_scale, int32_t zp,
                                                                     void* q) {
  const __m512 inv = _mm512_set1_ps(inv_scale);
  const __m512i zero_point = _mm512_set1_epi32(zp);
  auto* out = static_cast<int8_t*>(q);
  int64_t i = 0;
  for (; i + 16 <= count; i += 16) {
    __m512i v = ToInt32Avx512<kUnsigned>(_mm512_loadu_ps(x + i), inv, zero_point);
    __m128i packed = kUnsigned ? _mm512_cvtusepi32_epi8(v) : _mm512_cvtsepi32_epi8(v);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), packed);
  }
  if (i < count) {
    __mmask16 tail = static_cast<__mmask16>((1u << (count - i)) - 1u);
    __m512i v = ToInt32Avx512<kUnsigned>(_mm512_maskz_loadu_ps(tail, x + i), inv, zero_point);
    if (kUnsigned) {
      _mm512_mask_cvtusepi32_storeu_epi8(out + i, tail, v);
    } else {
      _mm512_mask_cvtsepi32_storeu_epi8(out + i, tail, v);
    }
  }
}

#pragma GCC diagnostic pop
#endif

/*! \brief q = saturate(rne(x * inv_scale) + zp) as u8 or s8: AVX-512 when oneDNN may use it. */
void QuantizeRange(const float* x, int64_t count, float inv_scale, int32_t zp, bool u8,
                   void* q) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (UseAvx512()) {
    if (u8) {
      QuantizeChunkAvx512<true>(x, count, inv_scale, zp, q);
    } else {
      QuantizeChunkAvx512<false>(x, count, inv_scale, zp, q);
    }
    return;
  }
#endif
  if (u8) {
    QuantizeChunk(x, count, inv_scale, static_cast<float>(zp), 0.f, 255.f,
                  static_cast<uint8_t*>(q));
  } else {
    QuantizeChunk(x, count, inv_scale, 0.f, -128.f, 127.f, static_cast<int8_t*>(q));
  }
}

/*! \brief The scale / zero point of a range (DynamicQuantize); false if it is not finite. */
bool ScaleOfRange(float mn, float mx, float nonfinite, DType dtype, float* scale,
                  int32_t* zero_point) {
  if (!std::isfinite(mn) || !std::isfinite(mx) || nonfinite != 0.f) return false;
  float s;
  int32_t zp = 0;
  if (dtype == DType::kUInt8) {
    s = (mx - mn) / 255.f;
    if (s > 0.f && std::isfinite(s)) {
      zp = static_cast<int32_t>(std::nearbyint(-mn / s));
      zp = std::min(255, std::max(0, zp));
    }
  } else {
    s = std::max(-mn, mx) / 127.f;
  }
  if (!(s >= FLT_MIN) || !std::isfinite(s)) {
    s = 1.f;  // all zeros (or a denormal range): any scale represents it
    zp = 0;
  }
  *scale = s;
  *zero_point = zp;
  return true;
}

}  // namespace

bool DynamicQuantize(const float* x, int64_t count, DType dtype, void* q, float* scale,
                     int32_t* zero_point) {
  float mn = 0.f, mx = 0.f, nonfinite = 0.f, s = 1.f;
  int32_t zp = 0;
  bool ok = true;
  bool u8 = dtype == DType::kUInt8;
#pragma omp parallel if (count > 16384)
  {
    int t = omp_get_thread_num(), nt = omp_get_num_threads();
    int64_t per = ((count + nt - 1) / nt + 63) / 64 * 64;  // whole cache lines of u8 output
    int64_t begin = std::min(count, t * per), end = std::min(count, begin + per);
    float lo = 0.f, hi = 0.f, bad = 0.f;
    RangeOf(x + begin, end - begin, &lo, &hi, &bad);
#pragma omp critical(tvm_onednn_dynamic_quantize)
    {
      mn = std::min(mn, lo);
      mx = std::max(mx, hi);
      nonfinite += bad;
    }
#pragma omp barrier
#pragma omp single
    ok = ScaleOfRange(mn, mx, nonfinite, dtype, &s, &zp);
    // (the single's implicit barrier publishes s, zp and ok)
    if (ok) {
      QuantizeRange(x + begin, end - begin, 1.f / s, zp, u8, static_cast<int8_t*>(q) + begin);
    }
  }
  *scale = s;
  *zero_point = zp;
  return ok;
}

float ResidualScale(const Node& node) {
  return node.quant.residual_scale ? *node.quant.residual_scale : 1.f;
}

int32_t ResidualZeroPoint(const Node& node) { return node.quant.residual_zp; }

float PoolRescale(const Node& node) {
  if (!node.spec->quantized || !node.spec->IsPool()) return 1.f;
  return *node.quant.src_scale / *node.quant.dst_scale;
}

float PoolShift(const Node& node) {
  if (!node.spec->quantized || !node.spec->IsPool()) return 0.f;
  return static_cast<float>(node.quant.dst_zp) -
         static_cast<float>(node.quant.src_zp) * PoolRescale(node);
}

std::string CpuIsaName() {
  using isa = dnnl::cpu_isa;
  switch (dnnl::get_effective_cpu_isa()) {
    case isa::sse41:
      return "sse41";
    case isa::avx:
      return "avx";
    case isa::avx2:
      return "avx2";
    case isa::avx2_vnni:
      return "avx2_vnni";
    case isa::avx2_vnni_2:
      return "avx2_vnni_2";
    case isa::avx512_core:
      return "avx512_core";
    case isa::avx512_core_vnni:
      return "avx512_core_vnni";
    case isa::avx512_core_bf16:
      return "avx512_core_bf16";
    case isa::avx512_core_fp16:
      return "avx512_core_fp16";
    case isa::avx512_core_amx:
      return "avx512_core_amx";
    case isa::avx512_core_amx_fp16:
      return "avx512_core_amx_fp16";
    default:
      return "default";
  }
}

bool CpuHasVnni() {
  using isa = dnnl::cpu_isa;
  switch (dnnl::get_effective_cpu_isa()) {
    case isa::sse41:
    case isa::avx:
    case isa::avx2:
    case isa::avx512_core:
      return false;
    default:
      return true;  // VNNI ISAs (and non-x86 builds, where the hazard does not apply)
  }
}

void SetInt8SaturationGuard(int mode) {
  if (mode < -1 || mode > 1) {
    TVM_FFI_THROW(ValueError) << "onednn.set_int8_saturation_guard: mode must be -1 (auto), "
                                 "0 (off) or 1 (on), got "
                              << mode;
  }
  g_guard_mode.store(mode);
}

int Int8SaturationGuardMode() { return g_guard_mode.load(); }

bool Int8SaturationGuardActive() {
  int mode = g_guard_mode.load();
  return mode == 1 || (mode == -1 && !CpuHasVnni());
}

const char* WeightRoundingName(WeightRounding r) {
  switch (r) {
    case WeightRounding::kNone:
      return "none";
    case WeightRounding::kOneDNNHalved:
      return "onednn_halved";
    case WeightRounding::kRuntimeHalved:
      return "runtime_halved";
  }
  return "none";
}

WeightRounding ChooseWeightRounding(const Node& node, DType src, const std::string& impl,
                                    int max_pair_sum) {
  bool is_conv = node.spec->base == BaseOp::kConv2d;
  bool reference = impl.rfind("ref", 0) == 0;  // reference kernels accumulate in s32 directly
  bool gemm = impl.find("gemm") != std::string::npos;
  if (reference) return WeightRounding::kNone;
  if (is_conv && src == DType::kInt8 && !gemm && !CpuHasVnni()) {
    return WeightRounding::kOneDNNHalved;
  }
  if (!Int8SaturationGuardActive() || max_pair_sum <= 128) return WeightRounding::kNone;
  return WeightRounding::kRuntimeHalved;
}

int MaxPairSum(const int8_t* data, const std::vector<int64_t>& shape, size_t axis) {
  int64_t outer = 1, inner = 1;
  for (size_t d = 0; d < axis; ++d) outer *= shape[d];
  for (size_t d = axis + 1; d < shape.size(); ++d) inner *= shape[d];
  const int64_t len = shape[axis];
  int best = 0;
  for (int64_t o = 0; o < outer; ++o) {
    const int8_t* slab = data + o * len * inner;
    for (int64_t k = 0; k < len; k += 2) {
      const int8_t* first = slab + k * inner;
      const int8_t* second = k + 1 < len ? first + inner : nullptr;
      for (int64_t i = 0; i < inner; ++i) {
        int sum = std::abs(int{first[i]}) + (second ? std::abs(int{second[i]}) : 0);
        best = std::max(best, sum);
      }
    }
  }
  return best;
}

void HalveInt8Weights(const int8_t* src, int8_t* dst, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    dst[i] = static_cast<int8_t>(std::nearbyint(static_cast<float>(src[i]) * 0.5f));
  }
}

}  // namespace tvm_onednn
