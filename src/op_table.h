/*!
 * \file op_table.h
 * \brief The composite-name -> op spec table (the runtime's exact dispatch keys).
 *
 * Names follow docs/subgraph-format.md: `onednn.<base>[_bias][_add][_<act>]` for conv2d and
 * matmul plus the three pools; their int8 forms `onednn.q<base>[_bias][_add][_<act>]`,
 * `onednn.q<pool>`; the int8 boundary ops `onednn.quantize` / `onednn.dequantize`; and the
 * transformer ops `onednn.layer_norm`, `onednn.softmax`, standalone activations
 * (`onednn.gelu`, ...), broadcast binaries `onednn.<add|subtract|...>[_<act>]`,
 * `onednn.reshape` and `onednn.transpose`.
 * Lookup is by exact name; there is no substring dispatch.
 */
#ifndef TVM_ONEDNN_OP_TABLE_H_
#define TVM_ONEDNN_OP_TABLE_H_

#include <string>
#include <vector>

namespace tvm_onednn {

enum class BaseOp {
  kConv2d,
  kMatmul,
  kMaxPool2d,
  kAvgPool2d,
  kGlobalAvgPool2d,
  kQuantize,    // f32 -> u8/s8 (a reorder with a dst scale)
  kDequantize,  // u8/s8 -> f32 (a reorder with a src scale)
  // transformer ops (float32)
  kLayerNorm,  // data, gamma, beta: normalize over the last axis
  kSoftmax,    // data; attrs axis, nan_to_zero
  kEltwise,    // data; the activation is OpSpec::act
  kBinary,     // a, b with numpy broadcasting; OpSpec::binary, optional activation
  kReshape,    // data; a view where possible
  kTranspose,  // data; attrs axes; a permuted view
};

/*! \brief The algorithm of a broadcast binary op (onednn.add, ...). */
enum class BinaryAlg { kNone, kAdd, kSubtract, kMultiply, kDivide, kMaximum, kMinimum };

enum class Activation {
  kNone,
  kRelu,
  kClip,
  kSigmoid,
  kTanh,
  kGelu,
  kGeluTanh,
  kSilu,
  kHardswish,
  kLeakyRelu,
};

struct OpSpec {
  std::string name;
  BaseOp base;
  bool has_bias = false;
  bool has_add = false;
  Activation act = Activation::kNone;
  BinaryAlg binary = BinaryAlg::kNone;  // kBinary only
  /*! \brief An int8 op (`onednn.q*`, quantize, dequantize): the node carries a "quant" object. */
  bool quantized = false;

  /*! \brief Number of entries expected in the node's "inputs" list. */
  int NumOperands() const;
  /*! \brief Role of operand i, for error messages ("data", "weight", "bias", "residual", ...). */
  const char* OperandName(int i) const;
  /*! \brief Index of the bias operand, or -1. */
  int BiasIndex() const { return has_bias ? 2 : -1; }
  /*! \brief Index of the residual operand, or -1. */
  int ResidualIndex() const { return has_add ? (has_bias ? 3 : 2) : -1; }
  bool IsPool() const {
    return base == BaseOp::kMaxPool2d || base == BaseOp::kAvgPool2d ||
           base == BaseOp::kGlobalAvgPool2d;
  }
  /*! \brief reshape / transpose: no computation, the output is a view of the data if possible. */
  bool IsLayout() const { return base == BaseOp::kReshape || base == BaseOp::kTranspose; }
  /*! \brief quantize / dequantize: one operand, executed as a scaling reorder. */
  bool IsQuantReorder() const { return base == BaseOp::kQuantize || base == BaseOp::kDequantize; }
};

/*! \brief Exact-name lookup; nullptr if the name is not a supported composite. */
const OpSpec* LookupOp(const std::string& name);
/*! \brief All table entries, in a stable order. */
const std::vector<OpSpec>& AllOps();
/*! \brief Suffix name of an activation ("relu", ...); "" for none. */
const char* ActivationName(Activation act);
/*! \brief "add", "subtract", ...; "" for none. */
const char* BinaryAlgName(BinaryAlg alg);

}  // namespace tvm_onednn

#endif  // TVM_ONEDNN_OP_TABLE_H_
