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
 * \brief Post-op chain of one node, in execution order: [residual] [eltwise] [pool scale].
 * The residual (conv/matmul) and the pool scale (pools, which have no other post-ops) are
 * therefore always post-op 0 for DNNL_ARG_ATTR_MULTIPLE_POST_OP.
 */
struct PostOps {
  ResidualMode residual = ResidualMode::kNone;
  MemDesc residual_md;                  // src1 of the binary_add (kBinary only)
  std::optional<MemDesc> pool_scale_md;  // binary_mul src1 fixing avg-pool divisors (ceil_mode)
};

/*! \brief Logical dims of the primitive-level views of a node's operands. */
struct NodeDims {
  Dims src, weights, bias, dst;  // weights empty for pools; bias empty if none
};

NodeDims GetNodeDims(const Graph& g, const Node& node);

/*! \brief The attr (scratchpad_mode::user + post-ops) of a node. */
dnnl::primitive_attr MakeAttr(const Node& node, const PostOps& post);

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

/*! \brief impl_info_str of any pd. */
std::string ImplName(const dnnl::primitive_desc_base& pd);

}  // namespace tvm_onednn

#endif  // TVM_ONEDNN_PRIMITIVES_H_
