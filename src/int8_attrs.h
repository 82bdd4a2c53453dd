/*!
 * \file int8_attrs.h
 * \brief int8 nodes: the `quant` object (parsing, validation) and the oneDNN attributes and
 *        scale memories built from it (docs/subgraph-format.md, "int8 nodes").
 *
 * Math (real = scale * (q - zero_point)):
 *  - qconv2d / qmatmul: oneDNN v3 computes
 *      dst = saturate(round(post_ops(src_scale * wei_scale[o] * acc_s32 + bias) / dst_scale
 *                           + dst_zp))
 *    (acc_s32 over q_src - src_zp); zero points are s32 memories bound as
 *    `DNNL_ARG_ATTR_ZERO_POINTS | DNNL_ARG_<X>` (set only when non-zero).
 *    with src/weights/dst scales set by `set_scales_mask` and passed at execution as
 *    `DNNL_ARG_ATTR_SCALES | DNNL_ARG_<X>` memories; the dst scale is set only for u8/s8 outputs.
 *    The residual is post-op 0: `sum(residual_scale)` (the sum adds scale * stored value in f32,
 *    before the dst scale) or `binary_add`, wrapped in `eltwise_linear(1/rs)` ... `linear(rs)`
 *    when its stored values carry a scale rs != 1.
 *  - pools: int8 in, same dtype out; src_scale / dst_scale != 1 is an `eltwise_linear` post-op.
 *  - quantize / dequantize: reorders with a dst (resp. src) scale: dst = src * src_s / dst_s.
 */
#ifndef TVM_ONEDNN_INT8_ATTRS_H_
#define TVM_ONEDNN_INT8_ATTRS_H_

#include <tvm/ffi/any.h>

#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common.h"
#include "op_table.h"

namespace tvm_onednn {

struct Graph;
struct Node;

/*! \brief The parsed `quant` object of an int8 node (zero points default to 0). */
struct QuantParams {
  std::optional<float> src_scale;
  std::vector<float> weight_scales;  // 1 (per tensor) or one per output channel
  std::optional<float> residual_scale;
  std::optional<float> dst_scale;
  int32_t src_zp = 0, residual_zp = 0, dst_zp = 0;
  // `"src_scale": "dynamic"` (qmatmul only): the float32 `a` is quantized on every call to
  // `dynamic_dtype` (u8 asymmetric or s8 symmetric) with the range of that call.
  bool dynamic_src = false;
  DType dynamic_dtype = DType::kUInt8;
};

/*! \brief Reports a validation error (throws; never returns). */
using QuantFail = std::function<void(const std::string&)>;

/*!
 * \brief Parse the node's `quant` field (`quant` is nullptr when absent) for op `spec`.
 *        Checks presence (only int8 ops have one, and they must), known keys for the op, the
 *        scales (positive finite float32 numbers; weight_scales a non-empty list) and the zero
 *        points (integers; their range is checked against the dtypes by ValidateQuant).
 */
QuantParams ParseQuant(const OpSpec& spec, const tvm::ffi::Any* quant, const QuantFail& fail);

/*!
 * \brief Cross-check `quant` with the node's operands (dtypes already validated):
 *        weight_scales has 1 or O (conv) / N (matmul) entries, residual_scale is given iff the
 *        residual is u8/s8, dst_scale is given iff the output is u8/s8, pools have both scales;
 *        zero points lie in their tensor's dtype range, and the pools' are exact
 *        (max pool: equal scales and zero points; avg pool with a src zero point: no padded taps).
 */
void ValidateQuant(const Graph& g, const Node& node, const QuantFail& fail);

/*! \brief The dtype the node's int8 primitive reads as src: the data's, or the dynamic dtype. */
DType QuantSrcDType(const Graph& g, const Node& node);

/*!
 * \brief Dynamic quantization of a float32 buffer (one call): its range over `count` values,
 *        then the scale / zero point that map it onto `dtype` (u8: [min(lo, 0), max(hi, 0)]
 *        onto 0..255 with zp = rne(-lo' / scale); s8: max|x| / 127, zp 0; a range of 0 gives
 *        scale 1), then `q` (u8 / s8, `count` values) = saturate(rne(x / scale) + zp). One
 *        OpenMP region: each thread quantizes the chunk whose range it has just read, while it is
 *        in its cache. Returns false, writing nothing to `q`, on a NaN or an infinity.
 */
bool DynamicQuantize(const float* x, int64_t count, DType dtype, void* q, float* scale,
                     int32_t* zero_point);

/*! \brief Scale mask of conv/matmul weights: the output-channel axis (0 = per tensor). */
int WeightScalesMask(const Node& node, int weights_ndims);

/*! \brief Set the src / weights / dst scale masks of an int8 conv or matmul. */
void SetConvMatmulScales(const Node& node, int weights_ndims, dnnl::primitive_attr* attr);

/*! \brief Set the dst (quantize) or src (dequantize) scale mask of the node's reorder. */
void SetReorderScales(const Node& node, dnnl::primitive_attr* attr);

/*! \brief The zero-point masks (0: one per tensor) of the node's non-zero src / dst zero points. */
void SetZeroPoints(const Node& node, dnnl::primitive_attr* attr);

/*! \brief The node's non-zero src / dst zero points as (DNNL_ARG_ATTR_ZERO_POINTS | arg, value). */
std::vector<std::pair<int, int32_t>> ZeroPointArgs(const Node& node);

/*!
 * \brief The scale memories the node's primitive reads at execution, as
 *        (DNNL_ARG_ATTR_SCALES | DNNL_ARG_<X>, values). `weight_factor` multiplies the weight
 *        scales (2 when the runtime halved the int8 weights at init).
 */
std::vector<std::pair<int, std::vector<float>>> ScaleArgs(const Node& node, float weight_factor);

/*! \brief Real scale of the residual's stored values: residual_scale (int8 residual), else 1. */
float ResidualScale(const Node& node);

/*! \brief Zero point of the residual's stored values: residual_zero_point (int8), else 0. */
int32_t ResidualZeroPoint(const Node& node);

/*! \brief Pools: src_scale / dst_scale (1 for float32 pools or equal scales). */
float PoolRescale(const Node& node);

/*! \brief Pools: the shift after the rescale, dst_zp - src_zp * src_scale / dst_scale. */
float PoolShift(const Node& node);

// ------------------------------------------------------------------------------------------
// Weight "saturation guard" for CPUs without VNNI.
//
// Without VNNI, oneDNN's x86 int8 kernels multiply u8 x s8 pairs with vpmaddubsw, whose s16
// result saturates when |x0*w0 + x1*w1| > 32767 (u8 data up to 255 and |w0| + |w1| > 128).
// The pairs are neighbours along the reduction axis (conv input channels 2k and 2k+1 at one
// output channel and kernel position; matmul rows 2k and 2k+1 of one column). oneDNN
// itself avoids this for s8-source convolutions by halving the weights (w' = rne(w / 2), scales
// doubled); u8-source convolutions and all int8 matmuls (gemm, s8 data shifted by +128) are
// left to saturate. With the guard on, the runtime halves the weights of every other int8
// conv / matmul whose weights have a pair with |w0| + |w1| > 128 at init in the same way, so no
// int8 node saturates: effective weights 2 * rne(w / 2). Weights whose pair sums stay <= 128
// are used as they are (the quantizer encodes u8-source weights that way: quantize/weights.py).
// With VNNI (or AMX) nothing is halved and the accumulation is exact.

/*! \brief oneDNN's effective ISA, e.g. "avx2", "avx512_core_amx". */
std::string CpuIsaName();
/*! \brief Whether the effective ISA has VNNI (u8 x s8 dot products into s32 without s16). */
bool CpuHasVnni();
/*! \brief -1 auto (on iff the ISA lacks VNNI), 0 off, 1 on; read when a region is initialized. */
void SetInt8SaturationGuard(int mode);
int Int8SaturationGuardMode();
bool Int8SaturationGuardActive();

/*! \brief How the int8 weights of a conv/matmul node are rounded (get_kernel_info). */
enum class WeightRounding { kNone, kOneDNNHalved, kRuntimeHalved };
const char* WeightRoundingName(WeightRounding r);
/*!
 * \brief The weight rounding of an int8 conv/matmul node whose primitive runs `impl` with
 *        source dtype `src` and int8 weights whose largest |w0| + |w1| over neighbouring pairs
 *        along the reduction axis is `max_pair_sum`:
 *        none for reference kernels; oneDNN halves s8-source conv weights in its jit kernels on
 *        non-VNNI ISAs; otherwise the runtime halves when the guard is active and some
 *        pair sum > 128 (255 * 128 fits s16). Depthwise convs reduce over one channel per
 *        group, so their "pairs" are single weights and never need halving.
 */
WeightRounding ChooseWeightRounding(const Node& node, DType src, const std::string& impl,
                                    int max_pair_sum);
/*!
 * \brief Largest |w[.., 2k, ..]| + |w[.., 2k + 1, ..]| of int8 `data` with `shape`, pairing
 *        along `axis` (a lone last element of an odd axis counts alone).
 */
int MaxPairSum(const int8_t* data, const std::vector<int64_t>& shape, size_t axis);
/*! \brief dst[i] = rne(src[i] / 2) (|dst| <= 64). */
void HalveInt8Weights(const int8_t* src, int8_t* dst, size_t n);

}  // namespace tvm_onednn

#endif  // TVM_ONEDNN_INT8_ATTRS_H_
