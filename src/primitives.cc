/*!
 * \file primitives.cc
 * \brief conv / matmul / pooling primitive descriptors with bias, residual and activation.
 */
#include "primitives.h"

namespace tvm_onednn {

using dnnl::algorithm;
using dnnl::prop_kind;

namespace {

Dims ToDims(const std::vector<int64_t>& v) { return Dims(v.begin(), v.end()); }

int64_t Prod(const std::vector<int64_t>& v, size_t begin, size_t end) {
  int64_t p = 1;
  for (size_t i = begin; i < end; ++i) p *= v[i];
  return p;
}

template <typename PD, typename... Args>
std::optional<PD> TryPd(Args&&... args) {
  try {
    PD pd(std::forward<Args>(args)..., /*allow_empty=*/true);
    if (!pd) return std::nullopt;
    return pd;
  } catch (const dnnl::error&) {
    return std::nullopt;
  }
}

}  // namespace

EltwiseAlg ActivationAlg(Activation act, const NodeAttrs& a) {
  switch (act) {
    case Activation::kRelu:
      return {algorithm::eltwise_relu, 0.f, 0.f};
    case Activation::kClip:
      return {algorithm::eltwise_clip_v2, static_cast<float>(a.clip_min),
              static_cast<float>(a.clip_max)};
    case Activation::kSigmoid:
      return {algorithm::eltwise_logistic, 0.f, 0.f};
    case Activation::kTanh:
      return {algorithm::eltwise_tanh, 0.f, 0.f};
    case Activation::kGelu:
      return {algorithm::eltwise_gelu_erf, 0.f, 0.f};
    case Activation::kGeluTanh:
      return {algorithm::eltwise_gelu_tanh, 0.f, 0.f};
    case Activation::kSilu:
      return {algorithm::eltwise_swish, 1.f, 0.f};
    case Activation::kHardswish:
      return {algorithm::eltwise_hardswish, 1.f / 6.f, 0.5f};
    case Activation::kLeakyRelu:
      return {algorithm::eltwise_relu, static_cast<float>(a.alpha), 0.f};
    case Activation::kNone:
      break;
  }
  return {algorithm::undef, 0.f, 0.f};
}

void AppendActivation(const Node& node, dnnl::post_ops* ops) {
  if (node.spec->act == Activation::kNone) return;
  EltwiseAlg e = ActivationAlg(node.spec->act, node.attrs);
  ops->append_eltwise(e.alg, e.alpha, e.beta);
}

dnnl::algorithm BinaryAlgorithm(BinaryAlg alg) {
  switch (alg) {
    case BinaryAlg::kAdd:
      return algorithm::binary_add;
    case BinaryAlg::kSubtract:
      return algorithm::binary_sub;
    case BinaryAlg::kMultiply:
      return algorithm::binary_mul;
    case BinaryAlg::kDivide:
      return algorithm::binary_div;
    case BinaryAlg::kMaximum:
      return algorithm::binary_max;
    case BinaryAlg::kMinimum:
      return algorithm::binary_min;
    case BinaryAlg::kNone:
      break;
  }
  return algorithm::undef;
}

dnnl::primitive_attr ScratchpadAttr(const dnnl::post_ops& ops) {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  attr.set_post_ops(ops);
  return attr;
}

bool IsReferenceImpl(const std::string& impl) { return impl.rfind("ref", 0) == 0; }

NodeDims GetNodeDims(const Graph& g, const Node& node) {
  NodeDims d;
  const OpSpec& spec = *node.spec;
  if (spec.base == BaseOp::kConv2d) {
    const auto& x = g.Info(node.inputs[0]).shape;
    const auto& w = g.Info(node.inputs[1]).shape;
    int64_t groups = node.attrs.groups;
    d.src = ToDims(x);
    if (groups > 1) {
      d.weights = {groups, w[0] / groups, w[1], w[2], w[3]};
    } else {
      d.weights = ToDims(w);
    }
    if (spec.has_bias) d.bias = {w[0]};
    d.dst = ToDims(node.out.shape);
  } else if (spec.base == BaseOp::kMatmul) {
    const auto& A = g.Info(node.inputs[0]).shape;
    const auto& B = g.Info(node.inputs[1]).shape;
    int64_t K = A.back(), N = B.back();
    if (B.size() == 2) {
      // Batch dims of a are folded into M: one 2-D GEMM instead of a batched one.
      int64_t M = Prod(A, 0, A.size() - 1);
      d.src = {M, K};
      d.weights = {K, N};
      d.dst = {M, N};
      if (spec.has_bias) d.bias = {1, N};
    } else {
      int64_t batch = Prod(A, 0, A.size() - 2);
      int64_t M = A[A.size() - 2];
      d.src = {batch, M, K};
      d.weights = {batch, K, N};
      d.dst = {batch, M, N};
      if (spec.has_bias) d.bias = {1, 1, N};
    }
  } else {
    d.src = ToDims(g.Info(node.inputs[0]).shape);
    d.dst = ToDims(node.out.shape);
  }
  return d;
}

dnnl::primitive_attr MakeAttr(const Node& node, const PostOps& post, int weights_ndims) {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  // A permission, not an order: oneDNN 3.2 takes it on AMX (bf16 tiles); elsewhere float32.
  if (node.attrs.fpmath_bf16) attr.set_fpmath_mode(dnnl::fpmath_mode::bf16);
  if (weights_ndims > 0) {
    SetConvMatmulScales(node, weights_ndims, &attr);
    SetZeroPoints(node, &attr);
  }
  dnnl::post_ops ops;
  if (post.output_scale != 1.f) {
    ops.append_eltwise(algorithm::eltwise_linear, post.output_scale, 0.f);
  }
  if (post.bias_md) ops.append_binary(algorithm::binary_add, *post.bias_md);
  if (post.residual == ResidualMode::kSum) {
    ops.append_sum(post.residual_scale, post.residual_zp, post.sum_dt);
  } else if (post.residual == ResidualMode::kBinary) {
    // y + rs * (r - zp) == rs * (y / rs + r) - rs * zp: oneDNN v3.2 has no scale or zero point
    // for a binary post-op's src1.
    float rs = post.residual_scale;
    if (post.WrapsResidual()) ops.append_eltwise(algorithm::eltwise_linear, 1.f / rs, 0.f);
    ops.append_binary(algorithm::binary_add, post.residual_md);
    if (post.WrapsResidual()) {
      ops.append_eltwise(algorithm::eltwise_linear, rs,
                         -rs * static_cast<float>(post.residual_zp));
    }
  }
  AppendActivation(node, &ops);
  if (post.pool_scale_md.has_value()) {
    ops.append_binary(algorithm::binary_mul, *post.pool_scale_md);
  }
  if (post.pool_rescale != 1.f || post.pool_shift != 0.f) {
    ops.append_eltwise(algorithm::eltwise_linear, post.pool_rescale, post.pool_shift);
  }
  attr.set_post_ops(ops);
  return attr;
}

std::optional<dnnl::convolution_forward::primitive_desc> MakeConvPd(
    const Node& node, const NodeDims& dims, const MemDesc& src, const MemDesc& weights,
    const MemDesc& dst, const PostOps& post) {
  const NodeAttrs& a = node.attrs;
  Dims strides = {a.strides[0], a.strides[1]};
  Dims dilation = {a.dilation[0] - 1, a.dilation[1] - 1};
  Dims pad_l = {a.padding[0], a.padding[1]};
  Dims pad_r = {a.padding[2], a.padding[3]};
  dnnl::primitive_attr attr = MakeAttr(node, post, static_cast<int>(dims.weights.size()));
  using PD = dnnl::convolution_forward::primitive_desc;
  if (node.spec->has_bias) {
    // float32 bias also for int8 (v3: added after the src/weights scales, before post-ops)
    MemDesc bias(dims.bias, dnnl::memory::data_type::f32, dnnl::memory::format_tag::a);
    return TryPd<PD>(CpuEngine(), prop_kind::forward_inference, algorithm::convolution_direct,
                     src, weights, bias, dst, strides, dilation, pad_l, pad_r, attr);
  }
  return TryPd<PD>(CpuEngine(), prop_kind::forward_inference, algorithm::convolution_direct, src,
                   weights, dst, strides, dilation, pad_l, pad_r, attr);
}

std::optional<dnnl::matmul::primitive_desc> MakeMatmulPd(const Node& node, const NodeDims& dims,
                                                         const MemDesc& src,
                                                         const MemDesc& weights,
                                                         const MemDesc& dst,
                                                         const PostOps& post) {
  dnnl::primitive_attr attr = MakeAttr(node, post, static_cast<int>(dims.weights.size()));
  using PD = dnnl::matmul::primitive_desc;
  if (node.spec->has_bias && !post.bias_md) {
    MemDesc bias =
        PlainLike(MemDesc(dims.bias, dnnl::memory::data_type::f32, dnnl::memory::format_tag::any));
    return TryPd<PD>(CpuEngine(), src, weights, bias, dst, attr);
  }
  return TryPd<PD>(CpuEngine(), src, weights, dst, attr);
}

std::optional<dnnl::pooling_forward::primitive_desc> MakePoolPd(const Node& node,
                                                                const NodeDims& dims,
                                                                const MemDesc& src,
                                                                const MemDesc& dst,
                                                                const PostOps& post) {
  const NodeAttrs& a = node.attrs;
  dnnl::primitive_attr attr = MakeAttr(node, post, 0);
  algorithm alg;
  Dims strides, kernel, dilation, pad_l, pad_r;
  if (node.spec->base == BaseOp::kGlobalAvgPool2d) {
    alg = algorithm::pooling_avg_exclude_padding;
    kernel = {dims.src[2], dims.src[3]};
    strides = {1, 1};
    dilation = {0, 0};
    pad_l = {0, 0};
    pad_r = {0, 0};
  } else {
    if (node.spec->base == BaseOp::kMaxPool2d) {
      alg = algorithm::pooling_max;
    } else {
      alg = a.count_include_pad ? algorithm::pooling_avg_include_padding
                                : algorithm::pooling_avg_exclude_padding;
    }
    kernel = {a.pool_size[0], a.pool_size[1]};
    strides = {a.strides[0], a.strides[1]};
    dilation = {a.dilation[0] - 1, a.dilation[1] - 1};
    pad_l = {a.padding[0], a.padding[1]};
    pad_r = {a.padding[2], a.padding[3]};
    // ceil_mode: extend the right/bottom padding so oneDNN's floor formula yields the declared
    // output size.
    for (int d = 0; d < 2; ++d) {
      int64_t span = a.dilation[d] * (a.pool_size[d] - 1) + 1;
      int64_t needed = (dims.dst[2 + d] - 1) * a.strides[d] + span - dims.src[2 + d] - pad_l[d];
      if (needed > pad_r[d]) pad_r[d] = needed;
    }
  }
  using PD = dnnl::pooling_forward::primitive_desc;
  return TryPd<PD>(CpuEngine(), prop_kind::forward_inference, alg, src, dst, strides, kernel,
                   dilation, pad_l, pad_r, attr);
}

std::vector<float> PoolDivisorFix(const Graph& g, const Node& node) {
  if (node.spec->base != BaseOp::kAvgPool2d || !node.attrs.count_include_pad ||
      !node.attrs.ceil_mode) {
    return {};
  }
  const NodeAttrs& a = node.attrs;
  const auto& x = g.Info(node.inputs[0]).shape;
  const auto& y = node.out.shape;
  bool needed = false;
  std::vector<std::vector<float>> taps(2);  // per dim: taps counted by TVM for each output pos
  for (int d = 0; d < 2; ++d) {
    int64_t in = x[2 + d], k = a.pool_size[d], s = a.strides[d], dil = a.dilation[d];
    int64_t lo = -a.padding[d], hi = in + a.padding[d + 2];  // [lo, hi) counts toward divisor
    for (int64_t o = 0; o < y[2 + d]; ++o) {
      int64_t start = o * s - a.padding[d];
      int64_t count = 0;
      for (int64_t t = 0; t < k; ++t) {
        int64_t pos = start + t * dil;
        if (pos >= lo && pos < hi) ++count;
      }
      if (count != k) needed = true;
      taps[d].push_back(static_cast<float>(count));
    }
  }
  if (!needed) return {};
  float full = static_cast<float>(a.pool_size[0] * a.pool_size[1]);
  std::vector<float> fix;
  for (float th : taps[0]) {
    for (float tw : taps[1]) fix.push_back(full / (th * tw));
  }
  return fix;
}

std::optional<dnnl::reorder::primitive_desc> MakeQuantReorderPd(const Node& node,
                                                                const MemDesc& src,
                                                                const MemDesc& dst) {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  SetReorderScales(node, &attr);
  SetZeroPoints(node, &attr);
  try {
    dnnl::reorder::primitive_desc pd(CpuEngine(), src, CpuEngine(), dst, attr,
                                     /*allow_empty=*/true);
    if (!pd) return std::nullopt;
    return pd;
  } catch (const dnnl::error&) {
    return std::nullopt;
  }
}

std::string ImplName(const dnnl::primitive_desc_base& pd) {
  const char* s = pd.impl_info_str();
  return s ? std::string(s) : std::string("?");
}

}  // namespace tvm_onednn
