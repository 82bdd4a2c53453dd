/*!
 * \file op_table.cc
 * \brief Generates the composite table from the combinations in docs/subgraph-format.md.
 */
#include "op_table.h"

#include <unordered_map>

namespace tvm_onednn {

namespace {

const Activation kActivations[] = {
    Activation::kNone,     Activation::kRelu,      Activation::kClip,
    Activation::kSigmoid,  Activation::kTanh,      Activation::kGelu,
    Activation::kGeluTanh, Activation::kSilu,      Activation::kHardswish,
    Activation::kLeakyRelu,
};

struct Table {
  std::vector<OpSpec> ops;
  std::unordered_map<std::string, size_t> index;

  Table() {
    // float32 ops first (the original 83 names, same order), then their int8 forms.
    for (int quantized = 0; quantized < 2; ++quantized) AddFamily(quantized != 0);
    const std::pair<const char*, BaseOp> boundary[] = {{"onednn.quantize", BaseOp::kQuantize},
                                                       {"onednn.dequantize", BaseOp::kDequantize}};
    for (const auto& b : boundary) {
      OpSpec spec;
      spec.name = b.first;
      spec.base = b.second;
      spec.quantized = true;
      ops.push_back(spec);
    }
    AddTransformerOps();
    for (size_t i = 0; i < ops.size(); ++i) index[ops[i].name] = i;
  }

  void Add(const std::string& name, BaseOp base, Activation act = Activation::kNone,
           BinaryAlg binary = BinaryAlg::kNone) {
    OpSpec spec;
    spec.name = "onednn." + name;
    spec.base = base;
    spec.act = act;
    spec.binary = binary;
    ops.push_back(spec);
  }

  /*! \brief float32 ops of transformer layers (appended: earlier names keep their order). */
  void AddTransformerOps() {
    Add("layer_norm", BaseOp::kLayerNorm);
    Add("softmax", BaseOp::kSoftmax);
    for (Activation act : {Activation::kGelu, Activation::kGeluTanh, Activation::kRelu,
                           Activation::kSigmoid, Activation::kTanh, Activation::kSilu}) {
      Add(ActivationName(act), BaseOp::kEltwise, act);
    }
    for (BinaryAlg alg : {BinaryAlg::kAdd, BinaryAlg::kSubtract, BinaryAlg::kMultiply,
                          BinaryAlg::kDivide, BinaryAlg::kMaximum, BinaryAlg::kMinimum}) {
      for (Activation act : kActivations) {
        std::string name = BinaryAlgName(alg);
        if (act != Activation::kNone) name += std::string("_") + ActivationName(act);
        Add(name, BaseOp::kBinary, act, alg);
      }
    }
    Add("reshape", BaseOp::kReshape);
    Add("transpose", BaseOp::kTranspose);
  }

  void AddFamily(bool quantized) {
    const char* q = quantized ? "q" : "";
    const std::pair<const char*, BaseOp> bases[] = {{"conv2d", BaseOp::kConv2d},
                                                    {"matmul", BaseOp::kMatmul}};
    for (const auto& base : bases) {
      for (int bias = 0; bias < 2; ++bias) {
        for (int add = 0; add < 2; ++add) {
          for (Activation act : kActivations) {
            OpSpec spec;
            spec.name = std::string("onednn.") + q + base.first;
            if (bias) spec.name += "_bias";
            if (add) spec.name += "_add";
            if (act != Activation::kNone) spec.name += std::string("_") + ActivationName(act);
            spec.base = base.second;
            spec.has_bias = bias;
            spec.has_add = add;
            spec.act = act;
            spec.quantized = quantized;
            ops.push_back(spec);
          }
        }
      }
    }
    const std::pair<const char*, BaseOp> pools[] = {
        {"max_pool2d", BaseOp::kMaxPool2d},
        {"avg_pool2d", BaseOp::kAvgPool2d},
        {"global_avg_pool2d", BaseOp::kGlobalAvgPool2d}};
    for (const auto& pool : pools) {
      OpSpec spec;
      spec.name = std::string("onednn.") + q + pool.first;
      spec.base = pool.second;
      spec.quantized = quantized;
      ops.push_back(spec);
    }
  }
};

const Table& GetTable() {
  static Table table;
  return table;
}

}  // namespace

int OpSpec::NumOperands() const {
  switch (base) {
    case BaseOp::kLayerNorm:
      return 3;
    case BaseOp::kBinary:
      return 2;
    case BaseOp::kSoftmax:
    case BaseOp::kEltwise:
    case BaseOp::kReshape:
    case BaseOp::kTranspose:
      return 1;
    default:
      break;
  }
  if (IsPool() || IsQuantReorder()) return 1;
  return 2 + (has_bias ? 1 : 0) + (has_add ? 1 : 0);
}

const char* OpSpec::OperandName(int i) const {
  if (base == BaseOp::kLayerNorm) return i == 0 ? "data" : (i == 1 ? "gamma" : "beta");
  if (base == BaseOp::kBinary) return i == 0 ? "a" : "b";
  if (NumOperands() == 1) return "data";
  if (IsPool() || IsQuantReorder()) return "data";
  if (i == 0) return base == BaseOp::kMatmul ? "a" : "data";
  if (i == 1) return base == BaseOp::kMatmul ? "b" : "weight";
  if (i == BiasIndex()) return "bias";
  if (i == ResidualIndex()) return "residual";
  return "operand";
}

const OpSpec* LookupOp(const std::string& name) {
  const Table& table = GetTable();
  auto it = table.index.find(name);
  return it == table.index.end() ? nullptr : &table.ops[it->second];
}

const std::vector<OpSpec>& AllOps() { return GetTable().ops; }

const char* ActivationName(Activation act) {
  switch (act) {
    case Activation::kNone:
      return "";
    case Activation::kRelu:
      return "relu";
    case Activation::kClip:
      return "clip";
    case Activation::kSigmoid:
      return "sigmoid";
    case Activation::kTanh:
      return "tanh";
    case Activation::kGelu:
      return "gelu";
    case Activation::kGeluTanh:
      return "gelu_tanh";
    case Activation::kSilu:
      return "silu";
    case Activation::kHardswish:
      return "hardswish";
    case Activation::kLeakyRelu:
      return "leaky_relu";
  }
  return "";
}

const char* BinaryAlgName(BinaryAlg alg) {
  switch (alg) {
    case BinaryAlg::kNone:
      return "";
    case BinaryAlg::kAdd:
      return "add";
    case BinaryAlg::kSubtract:
      return "subtract";
    case BinaryAlg::kMultiply:
      return "multiply";
    case BinaryAlg::kDivide:
      return "divide";
    case BinaryAlg::kMaximum:
      return "maximum";
    case BinaryAlg::kMinimum:
      return "minimum";
  }
  return "";
}

}  // namespace tvm_onednn
