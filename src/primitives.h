/*!
 * \file primitives.h
 * \brief Building oneDNN primitive descriptors (conv / matmul / pooling) with fused post-ops.
 *
 * Pure functions of a node + memory descs; the memory planner (plan.cc) decides the descs and
 * calls these, possibly several times, to compare layouts and implementations.
 */
#ifndef TVM_ONEDNN_PRIMITIVES_H_
#define TVM_ONEDNN_PRIMITIVES_H_

#include <optional>
#include <string>
#include <vector>

#include "graph.h"
#include "memory.h"

namespace tvm_onednn {

/*! \brief How the residual operand of an `_add` composite is fused. */
enum class ResidualMode { kNone, kSum, kBinary };

/*!
 * \brief Post-op chain of one node, in execution order:
 *        [residual] [eltwise] [pool divisor fix] [pool rescale].
 * The residual is `sum(residual_scale, 0, sum_dt)` or, with src1 in its own dtype/layout,
 * `binary_add` -- wrapped in `eltwise_linear(1/rs)` ... `eltwise_linear(rs, -rs * zp)` when its
 * stored values carry a scale rs != 1 or a zero point zp != 0 (an int8 residual read by
 * binary_add). A sum adds `rs * (stored - zp)` itself. Pools have no other
 * post-ops, so the divisor fix is post-op 0.
 */
struct PostOps {
  ResidualMode residual = ResidualMode::kNone;
  MemDesc residual_md;        // src1 of the binary_add (kBinary only)
  float residual_scale = 1.f;  // real value = residual_scale * (stored value - residual_zp)
  int32_t residual_zp = 0;
  // kSum: the dtype the residual is stored in when it differs from dst's (same size: u8 <-> s8)
  dnnl::memory::data_type sum_dt = dnnl::memory::data_type::undef;
  std::optional<MemDesc> pool_scale_md;  // binary_mul src1 fixing avg-pool divisors (ceil_mode)
  float pool_rescale = 1.f;              // int8 pools: src_scale / dst_scale (eltwise_linear)
  float pool_shift = 0.f;                // int8 pools: dst_zp - src_zp * pool_rescale
  float output_scale = 1.f;              // matmul: eltwise_linear(output_scale) first
  std::optional<MemDesc> bias_md;        // matmul with output_scale: bias as binary_add src1

  /*! \brief Post-ops before the residual: the output scale and the bias when it is one. */
  int LeadingPostOps() const { return (output_scale != 1.f ? 1 : 0) + (bias_md ? 1 : 0); }
  /*! \brief Index of the bias binary_add post-op (bias_md set). */
  int BiasPostOpIndex() const { return output_scale != 1.f ? 1 : 0; }
  /*! \brief Whether a binary_add residual is wrapped in eltwise_linear post-ops (scale / zp). */
  bool WrapsResidual() const { return residual_scale != 1.f || residual_zp != 0; }
  /*! \brief Index of the binary_add residual post-op (for DNNL_ARG_ATTR_MULTIPLE_POST_OP). */
  int ResidualPostOpIndex() const { return LeadingPostOps() + (WrapsResidual() ? 1 : 0); }
};

/*! \brief oneDNN eltwise algorithm and alpha / beta of an activation with the node's attrs. */
struct EltwiseAlg {
  dnnl::algorithm alg;
  float alpha, beta;
};
EltwiseAlg ActivationAlg(Activation act, const NodeAttrs& attrs);

/*! \brief oneDNN binary algorithm of onednn.add / subtract / ... */
dnnl::algorithm BinaryAlgorithm(BinaryAlg alg);

/*! \brief Logical dims of the primitive-level views of a node's operands. */
struct NodeDims {
  Dims src, weights, bias, dst;  // weights empty for pools; bias empty if none
};

NodeDims GetNodeDims(const Graph& g, const Node& node);

/*!
 * \brief The attr of a node: scratchpad_mode::user, int8 scale masks (int8_attrs.h) and
 *        post-ops. `weights_ndims`: rank of the primitive's weights (0 for pools).
 */
dnnl::primitive_attr MakeAttr(const Node& node, const PostOps& post, int weights_ndims);

/*! \brief Conv pd; nullopt if oneDNN has no implementation for these descs. */
std::optional<dnnl::convolution_forward::primitive_desc> MakeConvPd(
    const Node& node, const NodeDims& dims, const MemDesc& src, const MemDesc& weights,
    const MemDesc& dst, const PostOps& post);

std::optional<dnnl::matmul::primitive_desc> MakeMatmulPd(const Node& node, const NodeDims& dims,
                                                         const MemDesc& src,
                                                         const MemDesc& weights,
                                                         const MemDesc& dst,
                                                         const PostOps& post);

std::optional<dnnl::pooling_forward::primitive_desc> MakePoolPd(const Node& node,
                                                                const NodeDims& dims,
                                                                const MemDesc& src,
                                                                const MemDesc& dst,
                                                                const PostOps& post);

/*!
 * \brief For avg pools with count_include_pad whose ceil_mode extends the window past the
 *        declared right/bottom padding, oneDNN's divisor (KH*KW) differs from TVM/PyTorch's
 *        (taps inside [-pad_l, in + pad_r)). Returns the per-output-position factor
 *        [OH*OW] to multiply with, or an empty vector when no fix is needed.
 */
std::vector<float> PoolDivisorFix(const Graph& g, const Node& node);

/*!
 * \brief quantize / dequantize: a reorder src_md -> dst_md with the node's dst / src scale;
 *        nullopt if oneDNN cannot do it.
 */
std::optional<dnnl::reorder::primitive_desc> MakeQuantReorderPd(const Node& node,
                                                                const MemDesc& src,
                                                                const MemDesc& dst);

/*! \brief A primitive attr with a user scratchpad and the given post-ops. */
dnnl::primitive_attr ScratchpadAttr(const dnnl::post_ops& ops = dnnl::post_ops());

/*! \brief Appends the node's activation (if any) as an eltwise post-op. */
void AppendActivation(const Node& node, dnnl::post_ops* ops);

/*! \brief True for oneDNN's reference (non-optimized) implementations ("ref:any", ...). */
bool IsReferenceImpl(const std::string& impl);

/*! \brief impl_info_str of any pd. */
std::string ImplName(const dnnl::primitive_desc_base& pd);

}  // namespace tvm_onednn

#endif  // TVM_ONEDNN_PRIMITIVES_H_
