/*!
 * \file graph.h
 * \brief The parsed, validated form of a subgraph JSON document (docs/subgraph-format.md).
 */
#ifndef TVM_ONEDNN_GRAPH_H_
#define TVM_ONEDNN_GRAPH_H_

#include <tvm/ffi/any.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common.h"
#include "int8_attrs.h"
#include "op_table.h"

namespace tvm_onednn {

/*!
 * \brief Highest subgraph format version this runtime understands. Version 2 adds symbolic
 *        dimensions (a string instead of an integer); version 1 documents are read as before.
 */
constexpr int64_t kSubgraphFormatVersion = 2;
/*! \brief Value of the "format" field. */
constexpr const char* kSubgraphFormatName = "tvm_onednn.subgraph";

/*! \brief The JSON kind of a parsed value ("null", "bool", "int", "string", "array"...). */
std::string JsonTypeName(const tvm::ffi::Any& v);

enum class RefKind : uint8_t { kInput, kConst, kNode };

/*! \brief A reference to a value: region input i, constant i or the output of node i. */
struct ValueRef {
  RefKind kind = RefKind::kInput;
  int64_t index = 0;
  bool operator==(const ValueRef& o) const { return kind == o.kind && index == o.index; }
  bool operator!=(const ValueRef& o) const { return !(*this == o); }
};

/*!
 * \brief A dimension < 0 in a parsed Graph stands for symbol `SymbolIndex(d)` of
 *        Graph::symbols (its value is bound from the inputs at call time); a concrete graph
 *        (no symbols) has only positive dims.
 */
inline bool IsSymbolic(int64_t dim) { return dim < 0; }
inline int64_t SymbolDim(size_t index) { return -static_cast<int64_t>(index) - 1; }
inline size_t SymbolIndex(int64_t dim) { return static_cast<size_t>(-dim - 1); }

struct TensorInfo {
  std::vector<int64_t> shape;
  DType dtype = DType::kFloat32;
};

struct ConstInfo : TensorInfo {
  std::string name;
};

/*! \brief Union of the attributes of all ops (unused ones keep their defaults). */
struct NodeAttrs {
  std::vector<int64_t> strides{1, 1};
  std::vector<int64_t> padding{0, 0, 0, 0};  // top, left, bottom, right
  std::vector<int64_t> dilation{1, 1};
  std::vector<int64_t> pool_size;
  int64_t groups = 1;
  bool ceil_mode = false;
  bool count_include_pad = false;
  double clip_min = 0.0;
  double clip_max = 0.0;
  double alpha = 0.0;
  double epsilon = 1e-5;             // layer_norm
  int64_t axis = -1;                 // softmax
  bool nan_to_zero = false;          // softmax: NaN results become 0
  std::vector<int64_t> axes;         // transpose: output dim i is data dim axes[i]
  double output_scale = 1.0;         // matmul: (a @ b) * output_scale, before bias
  bool fpmath_bf16 = false;          // float matmul: oneDNN may compute in bf16 (fpmath_mode)
};

struct Node {
  std::string op;
  const OpSpec* spec = nullptr;
  std::vector<ValueRef> inputs;
  NodeAttrs attrs;
  QuantParams quant;  // int8 ops only
  TensorInfo out;
};

struct Graph {
  int64_t version = kSubgraphFormatVersion;
  std::string symbol;
  std::vector<TensorInfo> inputs;
  std::vector<ConstInfo> constants;
  std::vector<Node> nodes;
  std::vector<ValueRef> outputs;
  /*! \brief Names of the symbolic dimensions, in order of first occurrence in the inputs. */
  std::vector<std::string> symbols;

  bool dynamic() const { return !symbols.empty(); }
  /*! \brief "[n,3,224,224]": a shape with its symbols by name. */
  std::string DimsStr(const std::vector<int64_t>& shape) const;
  /*! \brief "224" or "n". */
  std::string DimStr(int64_t dim) const;
  /*! \brief Dense value id: inputs first, then constants, then nodes. */
  int ValueId(const ValueRef& r) const {
    switch (r.kind) {
      case RefKind::kInput:
        return static_cast<int>(r.index);
      case RefKind::kConst:
        return static_cast<int>(inputs.size() + r.index);
      case RefKind::kNode:
        return static_cast<int>(inputs.size() + constants.size() + r.index);
    }
    return -1;
  }
  int NumValues() const { return static_cast<int>(inputs.size() + constants.size() + nodes.size()); }
  const TensorInfo& Info(const ValueRef& r) const;
  /*! \brief "input 0", "const 2 (name)", "node 3 (onednn.conv2d)" */
  std::string RefStr(const ValueRef& r) const;
};

/*!
 * \brief Parse and fully validate a subgraph JSON document.
 * Throws ValueError (naming the symbol, node and problem) on any violation of the contract:
 * bad format/version, unknown op, wrong operand count, dangling/forward reference, attribute
 * errors, shape mismatches between operands and the node's declared output, unsupported dtype,
 * dtypes of int8 operands and the `quant` fields of int8 nodes.
 */
Graph ParseGraph(const std::string& json);

/*!
 * \brief Numpy broadcasting of two (possibly symbolic) shapes: ranks right-aligned, a dim of 1
 *        takes the other's. Returns false (and the first conflicting output dim in *bad_dim)
 *        when a pair of dims is neither equal nor has a 1.
 */
bool BroadcastShapes(const std::vector<int64_t>& a, const std::vector<int64_t>& b,
                     std::vector<int64_t>* out, size_t* bad_dim);

/*! \brief Output spatial size of a pooling window (PyTorch/TVM semantics incl. ceil_mode). */
int64_t PoolOutSize(int64_t in, int64_t k, int64_t stride, int64_t pad_l, int64_t pad_r,
                    int64_t dilation, bool ceil_mode);

}  // namespace tvm_onednn

#endif  // TVM_ONEDNN_GRAPH_H_
