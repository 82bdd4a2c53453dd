/*!
 * \file graph.cc
 * \brief JSON -> Graph parsing and validation with precise error messages.
 */
#include "graph.h"

#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/map.h>
#include <tvm/ffi/extra/json.h>
#include <tvm/ffi/string.h>

#include <algorithm>
#include <cmath>
#include <set>

namespace tvm_onednn {

namespace json = ::tvm::ffi::json;
using ::tvm::ffi::Any;
using ::tvm::ffi::String;

namespace {

/*! \brief Collects the "where" prefix of error messages. */
class Ctx {
 public:
  explicit Ctx(std::string prefix) : prefix_(std::move(prefix)) {}
  [[noreturn]] void Fail(const std::string& msg) const {
    TVM_FFI_THROW(ValueError) << prefix_ << msg;
    TVM_FFI_UNREACHABLE();
  }
  Ctx Sub(const std::string& more) const { return Ctx(prefix_ + more); }

 private:
  std::string prefix_;
};

json::Object AsObject(const Any& v, const Ctx& ctx, const std::string& what) {
  auto o = v.as<json::Object>();
  if (!o.has_value()) ctx.Fail(what + " must be a JSON object, got " + JsonTypeName(v));
  return *o;
}

json::Array AsArray(const Any& v, const Ctx& ctx, const std::string& what) {
  auto a = v.as<json::Array>();
  if (!a.has_value()) ctx.Fail(what + " must be a JSON array, got " + JsonTypeName(v));
  return *a;
}

std::string AsString(const Any& v, const Ctx& ctx, const std::string& what) {
  auto s = v.as<String>();
  if (!s.has_value()) ctx.Fail(what + " must be a string, got " + JsonTypeName(v));
  return std::string(*s);
}

int64_t AsInt(const Any& v, const Ctx& ctx, const std::string& what) {
  if (v.as<bool>().has_value()) ctx.Fail(what + " must be an integer, got bool");
  auto i = v.as<int64_t>();
  if (i.has_value()) return *i;
  auto d = v.as<double>();
  if (d.has_value() && std::floor(*d) == *d && std::fabs(*d) < 9e15) {
    return static_cast<int64_t>(*d);
  }
  ctx.Fail(what + " must be an integer, got " + JsonTypeName(v));
}

double AsNumber(const Any& v, const Ctx& ctx, const std::string& what) {
  if (v.as<bool>().has_value()) ctx.Fail(what + " must be a number, got bool");
  auto i = v.as<int64_t>();
  if (i.has_value()) return static_cast<double>(*i);
  auto d = v.as<double>();
  if (d.has_value()) return *d;
  ctx.Fail(what + " must be a number, got " + JsonTypeName(v));
}

bool AsBool(const Any& v, const Ctx& ctx, const std::string& what) {
  auto b = v.as<bool>();
  if (b.has_value()) return *b;
  auto i = v.as<int64_t>();
  if (i.has_value() && (*i == 0 || *i == 1)) return *i == 1;
  ctx.Fail(what + " must be a bool, got " + JsonTypeName(v));
}

std::optional<Any> Field(const json::Object& obj, const char* key) {
  auto it = obj.find(String(key));
  if (it == obj.end()) return std::nullopt;
  return (*it).second;
}

Any Required(const json::Object& obj, const char* key, const Ctx& ctx, const std::string& what) {
  auto f = Field(obj, key);
  if (!f.has_value()) ctx.Fail(what + " is missing required field \"" + key + "\"");
  return *f;
}

std::vector<int64_t> AsIntList(const Any& v, const Ctx& ctx, const std::string& what,
                               int64_t expected_len = -1) {
  json::Array arr = AsArray(v, ctx, what);
  if (expected_len >= 0 && static_cast<int64_t>(arr.size()) != expected_len) {
    ctx.Fail(what + " must have " + std::to_string(expected_len) + " entries, got " +
             std::to_string(arr.size()));
  }
  std::vector<int64_t> out;
  for (size_t i = 0; i < arr.size(); ++i) {
    out.push_back(AsInt(arr[i], ctx, what + "[" + std::to_string(i) + "]"));
  }
  return out;
}

DType AsDType(const Any& v, const Ctx& ctx, const std::string& what) {
  std::string name = AsString(v, ctx, what);
  DType dtype;
  if (!ParseDType(name, &dtype)) ctx.Fail(what + " has unknown dtype '" + name + "'");
  if (!IsExecutableDType(dtype)) {
    ctx.Fail(what + " has dtype '" + name +
             "', which is not supported yet (this runtime executes float32, uint8 and int8)");
  }
  return dtype;
}

/*! \brief Where a shape is declared, which decides what a string (symbolic) dim may be. */
enum class ShapeRole {
  kConstant,     // static only
  kInput,        // a string declares (or repeats) a symbol
  kNodeOutput,   // a string must name a symbol declared by an input
};

/*!
 * \brief A shape whose dims are positive integers or, in version 2 region inputs and node
 *        outputs, strings naming symbols (encoded as SymbolDim, see graph.h).
 */
std::vector<int64_t> AsDims(const Any& v, const Ctx& ctx, const std::string& what,
                            ShapeRole role, Graph* g) {
  json::Array arr = AsArray(v, ctx, what);
  std::vector<int64_t> shape;
  for (size_t i = 0; i < arr.size(); ++i) {
    std::string dim_what = what + "[" + std::to_string(i) + "]";
    auto name = arr[i].as<String>();
    if (!name.has_value()) {
      int64_t d = AsInt(arr[i], ctx, dim_what);
      if (d <= 0) {
        std::string dims;
        for (size_t k = 0; k < arr.size(); ++k) {
          auto s = arr[k].as<String>();
          dims += (k ? "," : "") + (s ? std::string(*s) : std::to_string(AsInt(arr[k], ctx, what)));
        }
        ctx.Fail(what + " [" + dims + "] has a non-positive dimension");
      }
      shape.push_back(d);
      continue;
    }
    std::string sym(*name);
    if (role == ShapeRole::kConstant) {
      ctx.Fail(dim_what + " is the symbol '" + sym + "', but constants must have static shapes");
    }
    if (g->version < 2) {
      ctx.Fail(dim_what + " is the symbol '" + sym + "', but symbolic dimensions need " +
               "\"version\": 2 (the document has version " + std::to_string(g->version) + ")");
    }
    if (sym.empty()) ctx.Fail(dim_what + " is an empty symbol name");
    auto it = std::find(g->symbols.begin(), g->symbols.end(), sym);
    if (it == g->symbols.end()) {
      if (role != ShapeRole::kInput) {
        ctx.Fail(dim_what + " is the symbol '" + sym + "', which is not a dim of any region " +
                 "input (a symbol takes its value from the input shapes at call time)");
      }
      g->symbols.push_back(sym);
      it = g->symbols.end() - 1;
    }
    shape.push_back(SymbolDim(static_cast<size_t>(it - g->symbols.begin())));
  }
  return shape;
}

TensorInfo ParseTensorInfo(const Any& v, const Ctx& ctx, const std::string& what, ShapeRole role,
                           Graph* g) {
  json::Object obj = AsObject(v, ctx, what);
  TensorInfo info;
  info.shape = AsDims(Required(obj, "shape", ctx, what), ctx, what + " shape", role, g);
  info.dtype = AsDType(Required(obj, "dtype", ctx, what), ctx, what + " dtype");
  return info;
}

ValueRef ParseRef(const Any& v, const Graph& g, int64_t num_nodes_before, const Ctx& ctx,
                  const std::string& what) {
  json::Array arr = AsArray(v, ctx, what);
  if (arr.size() != 2) {
    ctx.Fail(what + " must be a [kind, index] pair, got " + std::to_string(arr.size()) +
             " entries");
  }
  std::string kind = AsString(arr[0], ctx, what + " kind");
  int64_t index = AsInt(arr[1], ctx, what + " index");
  ValueRef ref;
  int64_t limit = 0;
  if (kind == "input") {
    ref.kind = RefKind::kInput;
    limit = static_cast<int64_t>(g.inputs.size());
  } else if (kind == "const") {
    ref.kind = RefKind::kConst;
    limit = static_cast<int64_t>(g.constants.size());
  } else if (kind == "node") {
    ref.kind = RefKind::kNode;
    limit = num_nodes_before;
  } else {
    ctx.Fail(what + " has unknown kind '" + kind + "' (expected \"input\", \"const\" or \"node\")");
  }
  if (index < 0 || index >= limit) {
    if (ref.kind == RefKind::kNode && index >= 0 && index < num_nodes_before + 1 + 1000000) {
      ctx.Fail(what + " references node " + std::to_string(index) + ", but only " +
               std::to_string(limit) +
               " node(s) precede it (nodes must be in topological order)");
    }
    ctx.Fail(what + " references " + kind + " " + std::to_string(index) + ", out of range [0, " +
             std::to_string(limit) + ")");
  }
  ref.index = index;
  return ref;
}

void ParseAttrs(const json::Object& attrs, Node* node, const Ctx& ctx) {
  const OpSpec& spec = *node->spec;
  NodeAttrs& a = node->attrs;
  auto get = [&](const char* key) { return Field(attrs, key); };
  auto need = [&](const char* key) { return Required(attrs, key, ctx, "attrs"); };
  auto check_layout = [&](const char* key, const char* expected) {
    auto f = get(key);
    if (!f.has_value()) return;
    std::string v = AsString(*f, ctx, std::string("attr ") + key);
    if (!v.empty() && v != expected) {
      ctx.Fail(std::string("attr ") + key + " is '" + v + "', only '" + expected +
               "' is supported");
    }
  };
  if (spec.base == BaseOp::kConv2d) {
    a.strides = AsIntList(need("strides"), ctx, "attr strides", 2);
    a.padding = AsIntList(need("padding"), ctx, "attr padding", 4);
    a.dilation = AsIntList(need("dilation"), ctx, "attr dilation", 2);
    a.groups = AsInt(need("groups"), ctx, "attr groups");
    check_layout("data_layout", "NCHW");
    check_layout("kernel_layout", "OIHW");
    check_layout("out_layout", "NCHW");
  } else if (spec.base == BaseOp::kMaxPool2d || spec.base == BaseOp::kAvgPool2d) {
    a.pool_size = AsIntList(need("pool_size"), ctx, "attr pool_size", 2);
    a.strides = AsIntList(need("strides"), ctx, "attr strides", 2);
    a.padding = AsIntList(need("padding"), ctx, "attr padding", 4);
    if (auto f = get("dilation")) a.dilation = AsIntList(*f, ctx, "attr dilation", 2);
    if (auto f = get("ceil_mode")) a.ceil_mode = AsBool(*f, ctx, "attr ceil_mode");
    if (spec.base == BaseOp::kAvgPool2d) {
      if (auto f = get("count_include_pad")) {
        a.count_include_pad = AsBool(*f, ctx, "attr count_include_pad");
      }
    }
    check_layout("layout", "NCHW");
    check_layout("out_layout", "NCHW");
  } else if (spec.base == BaseOp::kGlobalAvgPool2d) {
    check_layout("layout", "NCHW");
    check_layout("out_layout", "NCHW");
  }
  if (spec.base == BaseOp::kLayerNorm) {
    a.epsilon = AsNumber(need("epsilon"), ctx, "attr epsilon");
    if (!(a.epsilon >= 0.0 && std::isfinite(a.epsilon))) {
      ctx.Fail("attr epsilon must be a finite number >= 0, got " + std::to_string(a.epsilon));
    }
  } else if (spec.base == BaseOp::kSoftmax) {
    a.axis = AsInt(need("axis"), ctx, "attr axis");
    if (a.axis < 0) {
      ctx.Fail("attr axis must be >= 0 (the codegen normalizes negative axes), got " +
               std::to_string(a.axis));
    }
    if (auto f = get("nan_to_zero")) a.nan_to_zero = AsBool(*f, ctx, "attr nan_to_zero");
  } else if (spec.base == BaseOp::kTranspose) {
    a.axes = AsIntList(need("axes"), ctx, "attr axes");
  } else if (spec.base == BaseOp::kMatmul && !spec.quantized) {
    if (auto f = get("output_scale")) {
      a.output_scale = AsNumber(*f, ctx, "attr output_scale");
      if (!std::isfinite(a.output_scale)) ctx.Fail("attr output_scale must be finite");
    }
    if (auto f = get("fpmath")) {
      std::string mode = AsString(*f, ctx, "attr fpmath");
      if (mode != "bf16" && mode != "f32") {
        ctx.Fail("attr fpmath must be \"bf16\" or \"f32\", got \"" + mode + "\"");
      }
      a.fpmath_bf16 = mode == "bf16";
    }
  }
  if (spec.act == Activation::kClip) {
    a.clip_min = AsNumber(need("clip_min"), ctx, "attr clip_min");
    a.clip_max = AsNumber(need("clip_max"), ctx, "attr clip_max");
    if (!(a.clip_min <= a.clip_max)) ctx.Fail("attr clip_min must be <= clip_max");
  }
  if (spec.act == Activation::kLeakyRelu) {
    a.alpha = AsNumber(need("alpha"), ctx, "attr alpha");
  }
  for (int64_t s : a.strides) {
    if (s <= 0) ctx.Fail("attr strides " + ShapeStr(a.strides) + " must be positive");
  }
  for (int64_t d : a.dilation) {
    if (d <= 0) ctx.Fail("attr dilation " + ShapeStr(a.dilation) + " must be positive");
  }
  for (int64_t p : a.padding) {
    if (p < 0) ctx.Fail("attr padding " + ShapeStr(a.padding) + " must be non-negative");
  }
  for (int64_t k : a.pool_size) {
    if (k <= 0) ctx.Fail("attr pool_size " + ShapeStr(a.pool_size) + " must be positive");
  }
}

/*! \brief True if `shape` is [n] or [1, ..., 1, n]. */
bool IsVectorOf(const std::vector<int64_t>& shape, int64_t n) {
  if (shape.empty() || shape.back() != n) return false;
  for (size_t i = 0; i + 1 < shape.size(); ++i) {
    if (shape[i] != 1) return false;
  }
  return true;
}

/*!
 * \brief Per-operand dtypes. float32 ops: everything float32. int8 ops
 *        (docs/subgraph-format.md, "int8 nodes"): conv2d/matmul read u8/s8 data, an s8 constant
 *        weight, a float32 bias, a u8/s8/f32 residual and write u8/s8/f32; pools keep their
 *        u8/s8 dtype; quantize f32 -> u8/s8; dequantize u8/s8 -> f32.
 */
void ValidateNodeDTypes(const Graph& g, const Node& node, const Ctx& ctx) {
  const OpSpec& spec = *node.spec;
  auto role = [&](size_t i) {
    return std::string(spec.OperandName(static_cast<int>(i))) + " (" + g.RefStr(node.inputs[i]) +
           ")";
  };
  auto dt = [&](size_t i) { return g.Info(node.inputs[i]).dtype; };
  auto quoted = [](DType d) { return std::string("'") + DTypeName(d) + "'"; };
  DType out = node.out.dtype;
  if (!spec.quantized) {
    for (size_t i = 0; i < node.inputs.size(); ++i) {
      if (dt(i) != DType::kFloat32) {
        ctx.Fail(role(i) + " has dtype " + quoted(dt(i)) + ", which is not supported by the " +
                 "float32 op " + spec.name +
                 " (u8/s8 values are read by onednn.q* ops and onednn.dequantize)");
      }
    }
    if (out != DType::kFloat32) {
      ctx.Fail("output dtype " + quoted(out) + " is not supported by the float32 op " +
               spec.name + " (int8 outputs come from onednn.q* ops and onednn.quantize)");
    }
    return;
  }
  auto need_int8 = [&](size_t i) {
    if (!IsInt8(dt(i))) {
      ctx.Fail(role(i) + " has dtype " + quoted(dt(i)) + ", expected 'uint8' or 'int8'");
    }
  };
  switch (spec.base) {
    case BaseOp::kQuantize:
      if (dt(0) != DType::kFloat32) {
        ctx.Fail(role(0) + " has dtype " + quoted(dt(0)) + ", expected 'float32'");
      }
      if (!IsInt8(out)) {
        ctx.Fail("output dtype " + quoted(out) + " must be 'uint8' or 'int8' for quantize");
      }
      return;
    case BaseOp::kDequantize:
      need_int8(0);
      if (out != DType::kFloat32) {
        ctx.Fail("output dtype " + quoted(out) + " must be 'float32' for dequantize");
      }
      return;
    case BaseOp::kMaxPool2d:
    case BaseOp::kAvgPool2d:
    case BaseOp::kGlobalAvgPool2d:
      need_int8(0);
      if (out != dt(0)) {
        ctx.Fail("output dtype " + quoted(out) + " differs from the data dtype " + quoted(dt(0)) +
                 " (an int8 pool keeps its input dtype)");
      }
      return;
    default:
      break;
  }
  if (node.quant.dynamic_src) {  // quantized on every call from float32
    if (dt(0) != DType::kFloat32) {
      ctx.Fail(role(0) + " has dtype " + quoted(dt(0)) +
               ", expected 'float32' (quant.src_scale is \"dynamic\")");
    }
  } else {
    need_int8(0);
  }
  if (dt(1) != DType::kInt8) {
    ctx.Fail(role(1) + " has dtype " + quoted(dt(1)) +
             ", expected 'int8' (int8 weights are signed 8-bit)");
  }
  if (node.inputs[1].kind != RefKind::kConst) {
    ctx.Fail(role(1) + " must be a constant (int8 weights are packed once at init)");
  }
  if (spec.has_bias && dt(spec.BiasIndex()) != DType::kFloat32) {
    size_t b = spec.BiasIndex();
    ctx.Fail(role(b) + " has dtype " + quoted(dt(b)) + ", expected 'float32'");
  }
  if (spec.has_add) {
    size_t r = spec.ResidualIndex();
    if (!IsInt8(dt(r)) && dt(r) != DType::kFloat32) {
      ctx.Fail(role(r) + " has dtype " + quoted(dt(r)) + ", expected 'uint8', 'int8' or 'float32'");
    }
  }
  if (!IsInt8(out) && out != DType::kFloat32) {
    ctx.Fail("output dtype " + quoted(out) + " must be 'uint8', 'int8' or 'float32'");
  }
}

/*! \brief Fails if a dim of `shape` from index `from` on is symbolic, saying `why`. */
void RequireStatic(const Graph& g, const std::vector<int64_t>& shape, size_t from, const Ctx& ctx,
                   const std::string& what, const std::string& why) {
  for (size_t i = from; i < shape.size(); ++i) {
    if (IsSymbolic(shape[i])) {
      ctx.Fail(what + " shape " + g.DimsStr(shape) + " has the symbolic dim " +
               std::to_string(i) + " (" + g.DimStr(shape[i]) + "): " + why);
    }
  }
}

/*! \brief gamma / beta: constants of shape [C], C the (static) last dim of the data. */
void ValidateLayerNorm(const Graph& g, const Node& node, const Ctx& ctx) {
  const auto& x = g.Info(node.inputs[0]).shape;
  if (x.empty()) ctx.Fail("data must have at least 1 dim, got shape []");
  RequireStatic(g, x, x.size() - 1, ctx, "data",
                "the normalized (last) dim of layer_norm must be static");
  int64_t c = x.back();
  for (int i = 1; i <= 2; ++i) {
    std::string role = std::string(i == 1 ? "gamma" : "beta") + " (" +
                       g.RefStr(node.inputs[i]) + ")";
    if (node.inputs[i].kind != RefKind::kConst) ctx.Fail(role + " must be a constant");
    const auto& p = g.Info(node.inputs[i]).shape;
    if (p.size() != 1 || p[0] != c) {
      ctx.Fail(role + " has shape " + g.DimsStr(p) + ", expected [" + std::to_string(c) +
               "] (the last dim of data " + g.DimsStr(x) + ")");
    }
  }
}

/*! \brief "n*s*384": the element count of a shape, symbols by name (constants first). */
std::string CountStr(const Graph& g, const std::vector<int64_t>& shape) {
  int64_t fixed = 1;
  std::string syms;
  for (int64_t d : shape) {
    if (IsSymbolic(d)) {
      syms += g.DimStr(d) + "*";
    } else {
      fixed *= d;
    }
  }
  return syms + std::to_string(fixed);
}

/*! \brief Same element count for every binding: equal static products, equal symbol multisets. */
void ValidateReshape(const Graph& g, const std::vector<int64_t>& x,
                     const std::vector<int64_t>& out, const Ctx& ctx) {
  auto split = [](const std::vector<int64_t>& shape, std::vector<int64_t>* syms) {
    int64_t fixed = 1;
    for (int64_t d : shape) {
      if (IsSymbolic(d)) {
        syms->push_back(d);
      } else {
        fixed *= d;
      }
    }
    std::sort(syms->begin(), syms->end());
    return fixed;
  };
  std::vector<int64_t> sx, so;
  int64_t fx = split(x, &sx), fo = split(out, &so);
  if (fx != fo || sx != so) {
    ctx.Fail("output shape " + g.DimsStr(out) + " has " + CountStr(g, out) +
             " elements, but data " + g.DimsStr(x) + " has " + CountStr(g, x) +
             " (a reshape keeps the element count; symbolic dims must be the data's)");
  }
}

void ValidateNodeShapes(const Graph& g, const Node& node, const Ctx& ctx) {
  const OpSpec& spec = *node.spec;
  std::vector<const TensorInfo*> ops;
  for (const ValueRef& r : node.inputs) ops.push_back(&g.Info(r));
  const std::vector<int64_t>& out = node.out.shape;
  auto check_out = [&](const std::vector<int64_t>& expected) {
    if (out != expected) {
      ctx.Fail("declared output shape " + g.DimsStr(out) + " does not match the shape " +
               g.DimsStr(expected) + " computed from its operands and attrs");
    }
  };
  auto check_residual = [&]() {
    int ri = spec.ResidualIndex();
    if (ri < 0) return;
    if (ops[ri]->shape != out) {
      ctx.Fail("residual (" + g.RefStr(node.inputs[ri]) + ") has shape " +
               g.DimsStr(ops[ri]->shape) + ", expected the output shape " + g.DimsStr(out));
    }
  };
  const NodeAttrs& a = node.attrs;
  bool transformer_op = spec.base == BaseOp::kLayerNorm || spec.base == BaseOp::kSoftmax ||
                        spec.base == BaseOp::kEltwise || spec.base == BaseOp::kBinary ||
                        spec.IsLayout();
  if (transformer_op && (out.empty() || out.size() > DNNL_MAX_NDIMS)) {
    ctx.Fail("output shape " + g.DimsStr(out) + " has rank " + std::to_string(out.size()) +
             ", expected 1 to " + std::to_string(DNNL_MAX_NDIMS) + " dims");
  }
  if (spec.base == BaseOp::kConv2d) {
    const auto& x = ops[0]->shape;
    const auto& w = ops[1]->shape;
    if (x.size() != 4) ctx.Fail("data must be 4-D NCHW, got shape " + g.DimsStr(x));
    if (w.size() != 4) ctx.Fail("weight must be 4-D OIHW, got shape " + g.DimsStr(w));
    RequireStatic(g, x, 1, ctx, "data", "only the batch dim N of a conv2d may be symbolic");
    RequireStatic(g, w, 0, ctx, "weight", "conv2d weights must have a static shape");
    int64_t g_ = a.groups;
    if (g_ <= 0) ctx.Fail("attr groups must be positive, got " + std::to_string(g_));
    if (x[1] != w[1] * g_) {
      ctx.Fail("data has " + std::to_string(x[1]) + " channels (shape " + g.DimsStr(x) +
               "), but weight " + g.DimsStr(w) + " with groups=" + std::to_string(g_) +
               " expects " + std::to_string(w[1] * g_));
    }
    if (w[0] % g_ != 0) {
      ctx.Fail("weight output channels " + std::to_string(w[0]) + " not divisible by groups=" +
               std::to_string(g_));
    }
    std::vector<int64_t> expected = {x[0], w[0], 0, 0};
    for (int d = 0; d < 2; ++d) {
      int64_t span = a.dilation[d] * (w[2 + d] - 1) + 1;
      int64_t padded = x[2 + d] + a.padding[d] + a.padding[d + 2];
      if (padded < span) {
        ctx.Fail("kernel " + g.DimsStr(w) + " (dilated extent " + std::to_string(span) +
                 ") is larger than the padded input " + g.DimsStr(x));
      }
      expected[2 + d] = (padded - span) / a.strides[d] + 1;
    }
    check_out(expected);
    if (spec.has_bias) {
      const auto& b = ops[spec.BiasIndex()]->shape;
      RequireStatic(g, b, 0, ctx, "bias", "bias shapes must be static");
      bool ok = (b.size() == 1 && b[0] == w[0]) ||
                (b.size() == 4 && b[0] == 1 && b[1] == w[0] && b[2] == 1 && b[3] == 1);
      if (!ok) {
        ctx.Fail("bias has shape " + g.DimsStr(b) + ", expected [" + std::to_string(w[0]) +
                 "] (or [1," + std::to_string(w[0]) + ",1,1])");
      }
    }
    check_residual();
  } else if (spec.base == BaseOp::kMatmul) {
    const auto& A = ops[0]->shape;
    const auto& B = ops[1]->shape;
    if (A.size() < 2) ctx.Fail("a must have at least 2 dims, got shape " + g.DimsStr(A));
    if (B.size() != 2 && B.size() != A.size()) {
      ctx.Fail("b must be 2-D or have the same rank as a; got a " + g.DimsStr(A) + ", b " +
               g.DimsStr(B));
    }
    if (B.size() == A.size() && B.size() > 2) {
      for (size_t i = 0; i + 2 < A.size(); ++i) {
        if (A[i] != B[i]) {
          ctx.Fail("batch dims of a " + g.DimsStr(A) + " and b " + g.DimsStr(B) +
                   " differ (broadcasting is not supported)");
        }
      }
    }
    int64_t K = A.back();
    int64_t Kb = B[B.size() - 2];
    if (K != Kb) {
      ctx.Fail("reduction dims differ: a " + g.DimsStr(A) + " has K=" + g.DimStr(K) + ", b " +
               g.DimsStr(B) + " has K=" + g.DimStr(Kb));
    }
    int64_t N = B.back();
    std::vector<int64_t> expected(A.begin(), A.end() - 1);
    expected.push_back(N);
    check_out(expected);
    if (spec.has_bias) {
      const auto& b = ops[spec.BiasIndex()]->shape;
      RequireStatic(g, b, 0, ctx, "bias", "bias shapes must be static");
      if (!IsVectorOf(b, N) || b.size() > A.size()) {
        ctx.Fail("bias has shape " + g.DimsStr(b) + ", expected [" + g.DimStr(N) + "]");
      }
    }
    if (spec.has_add && !spec.quantized) {
      // float32 matmul: the residual may broadcast to the output (an attention mask).
      int ri = spec.ResidualIndex();
      const auto& r = ops[ri]->shape;
      std::vector<int64_t> b_out;
      size_t bad = 0;
      if (r.size() > out.size() || !BroadcastShapes(r, out, &b_out, &bad) || b_out != out) {
        ctx.Fail("residual (" + g.RefStr(node.inputs[ri]) + ") has shape " + g.DimsStr(r) +
                 ", which does not broadcast to the output shape " + g.DimsStr(out) +
                 " (numpy rules: ranks right-aligned, each residual dim equal or 1)");
      }
      return;
    }
    check_residual();
  } else if (spec.IsQuantReorder() || spec.base == BaseOp::kEltwise) {
    check_out(ops[0]->shape);
  } else if (spec.base == BaseOp::kLayerNorm) {
    ValidateLayerNorm(g, node, ctx);
    check_out(ops[0]->shape);
  } else if (spec.base == BaseOp::kSoftmax) {
    const auto& x = ops[0]->shape;
    if (a.axis >= static_cast<int64_t>(x.size())) {
      ctx.Fail("attr axis " + std::to_string(a.axis) + " is out of range for data " +
               g.DimsStr(x) + " of rank " + std::to_string(x.size()) + " (expected 0 <= axis < " +
               std::to_string(x.size()) + ")");
    }
    check_out(x);
  } else if (spec.base == BaseOp::kBinary) {
    const auto& x = ops[0]->shape;
    const auto& y = ops[1]->shape;
    std::vector<int64_t> expected;
    size_t bad = 0;
    if (!BroadcastShapes(x, y, &expected, &bad)) {
      size_t rank = std::max(x.size(), y.size());
      int64_t dx = x[x.size() - (rank - bad)], dy = y[y.size() - (rank - bad)];
      ctx.Fail("a (" + g.RefStr(node.inputs[0]) + ") " + g.DimsStr(x) + " and b (" +
               g.RefStr(node.inputs[1]) + ") " + g.DimsStr(y) + " are not broadcastable: " +
               "output dim " + std::to_string(bad) + " pairs " + g.DimStr(dx) + " with " +
               g.DimStr(dy) + " (numpy rules: equal or 1)");
    }
    check_out(expected);
  } else if (spec.base == BaseOp::kReshape) {
    ValidateReshape(g, ops[0]->shape, out, ctx);
  } else if (spec.base == BaseOp::kTranspose) {
    const auto& x = ops[0]->shape;
    std::vector<bool> seen(x.size(), false);
    bool ok = a.axes.size() == x.size();
    for (size_t i = 0; ok && i < a.axes.size(); ++i) {
      int64_t ax = a.axes[i];
      ok = ax >= 0 && ax < static_cast<int64_t>(x.size()) && !seen[ax];
      if (ok) seen[ax] = true;
    }
    if (!ok) {
      ctx.Fail("attr axes " + ShapeStr(a.axes) + " is not a permutation of 0.." +
               std::to_string(static_cast<int64_t>(x.size()) - 1) + " (data " + g.DimsStr(x) +
               " has rank " + std::to_string(x.size()) + ")");
    }
    std::vector<int64_t> expected;
    for (int64_t ax : a.axes) expected.push_back(x[ax]);
    check_out(expected);
  } else {
    const auto& x = ops[0]->shape;
    if (x.size() != 4) ctx.Fail("data must be 4-D NCHW, got shape " + g.DimsStr(x));
    RequireStatic(g, x, 1, ctx, "data", "only the batch dim N of a pool may be symbolic");
    if (spec.base == BaseOp::kGlobalAvgPool2d) {
      check_out({x[0], x[1], 1, 1});
    } else {
      std::vector<int64_t> expected = {x[0], x[1], 0, 0};
      for (int d = 0; d < 2; ++d) {
        int64_t span = a.dilation[d] * (a.pool_size[d] - 1) + 1;
        if (x[2 + d] + a.padding[d] + a.padding[d + 2] < span) {
          ctx.Fail("pool window (extent " + std::to_string(span) +
                   ") is larger than the padded input " + g.DimsStr(x));
        }
        if (a.padding[d] >= span || a.padding[d + 2] >= span) {
          ctx.Fail("padding " + g.DimsStr(a.padding) + " must be smaller than the pool window");
        }
        expected[2 + d] = PoolOutSize(x[2 + d], a.pool_size[d], a.strides[d], a.padding[d],
                                      a.padding[d + 2], a.dilation[d], a.ceil_mode);
      }
      check_out(expected);
    }
  }
}

}  // namespace

std::string JsonTypeName(const Any& v) {
  if (v == nullptr) return "null";
  if (v.as<bool>().has_value()) return "bool";
  if (v.as<int64_t>().has_value()) return "int";
  if (v.as<double>().has_value()) return "float";
  if (v.as<String>().has_value()) return "string";
  if (v.as<json::Array>().has_value()) return "array";
  if (v.as<json::Object>().has_value()) return "object";
  return v.GetTypeKey();
}

bool BroadcastShapes(const std::vector<int64_t>& a, const std::vector<int64_t>& b,
                     std::vector<int64_t>* out, size_t* bad_dim) {
  size_t rank = std::max(a.size(), b.size());
  out->assign(rank, 1);
  for (size_t i = 0; i < rank; ++i) {
    size_t back = rank - i;  // position from the right, 1-based
    int64_t da = back <= a.size() ? a[a.size() - back] : 1;
    int64_t db = back <= b.size() ? b[b.size() - back] : 1;
    if (da == db || db == 1) {
      (*out)[i] = da;
    } else if (da == 1) {
      (*out)[i] = db;
    } else {
      *bad_dim = i;
      return false;
    }
  }
  return true;
}

int64_t PoolOutSize(int64_t in, int64_t k, int64_t stride, int64_t pad_l, int64_t pad_r,
                    int64_t dilation, bool ceil_mode) {
  int64_t span = dilation * (k - 1) + 1;
  int64_t num = in + pad_l + pad_r - span + (ceil_mode ? stride - 1 : 0);
  int64_t out = num / stride + 1;
  // The last window must start inside the input or the left padding (PyTorch / TVM rule).
  if (ceil_mode && (out - 1) * stride >= in + pad_l) --out;
  return out;
}

const TensorInfo& Graph::Info(const ValueRef& r) const {
  switch (r.kind) {
    case RefKind::kInput:
      return inputs.at(r.index);
    case RefKind::kConst:
      return constants.at(r.index);
    case RefKind::kNode:
      return nodes.at(r.index).out;
  }
  return inputs.at(0);
}

std::string Graph::DimStr(int64_t dim) const {
  if (!IsSymbolic(dim)) return std::to_string(dim);
  size_t k = SymbolIndex(dim);
  return k < symbols.size() ? symbols[k] : "?" + std::to_string(k);
}

std::string Graph::DimsStr(const std::vector<int64_t>& shape) const {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? "," : "") + DimStr(shape[i]);
  return out + "]";
}

std::string Graph::RefStr(const ValueRef& r) const {
  switch (r.kind) {
    case RefKind::kInput:
      return "input " + std::to_string(r.index);
    case RefKind::kConst:
      return "const " + std::to_string(r.index) + " (" + constants.at(r.index).name + ")";
    case RefKind::kNode:
      return "node " + std::to_string(r.index) + " (" + nodes.at(r.index).op + ")";
  }
  return "?";
}

Graph ParseGraph(const std::string& text) {
  Ctx top("onednn subgraph: ");
  String err;
  json::Value root_v;
  try {
    root_v = json::Parse(String(text), &err);
  } catch (const tvm::ffi::Error& e) {
    top.Fail(std::string("invalid JSON: ") + e.message());
  }
  if (!err.empty()) top.Fail("invalid JSON: " + std::string(err));
  json::Object root = AsObject(root_v, top, "document");

  Graph g;
  if (auto f = Field(root, "symbol")) {
    g.symbol = AsString(*f, top, "\"symbol\"");
  } else {
    top.Fail("document is missing required field \"symbol\"");
  }
  if (g.symbol.empty()) top.Fail("\"symbol\" must be a non-empty string");
  Ctx ctx(g.symbol + ": ");

  std::string format = AsString(Required(root, "format", ctx, "document"), ctx, "\"format\"");
  if (format != kSubgraphFormatName) {
    ctx.Fail("\"format\" is '" + format + "', expected '" + kSubgraphFormatName + "'");
  }
  g.version = AsInt(Required(root, "version", ctx, "document"), ctx, "\"version\"");
  if (g.version < 1 || g.version > kSubgraphFormatVersion) {
    ctx.Fail("unsupported subgraph format version " + std::to_string(g.version) +
             " (this runtime supports versions 1 to " + std::to_string(kSubgraphFormatVersion) +
             ")");
  }

  json::Array inputs = AsArray(Required(root, "inputs", ctx, "document"), ctx, "\"inputs\"");
  for (size_t i = 0; i < inputs.size(); ++i) {
    g.inputs.push_back(ParseTensorInfo(inputs[i], ctx, "input " + std::to_string(i),
                                       ShapeRole::kInput, &g));
  }
  json::Array consts =
      AsArray(Required(root, "constants", ctx, "document"), ctx, "\"constants\"");
  std::set<std::string> const_names;
  for (size_t i = 0; i < consts.size(); ++i) {
    std::string what = "constant " + std::to_string(i);
    ConstInfo c;
    static_cast<TensorInfo&>(c) = ParseTensorInfo(consts[i], ctx, what, ShapeRole::kConstant, &g);
    json::Object obj = AsObject(consts[i], ctx, what);
    c.name = AsString(Required(obj, "name", ctx, what), ctx, what + " name");
    if (c.name.empty()) ctx.Fail(what + " has an empty name");
    if (!const_names.insert(c.name).second) ctx.Fail("duplicate constant name '" + c.name + "'");
    g.constants.push_back(c);
  }

  json::Array nodes = AsArray(Required(root, "nodes", ctx, "document"), ctx, "\"nodes\"");
  for (size_t i = 0; i < nodes.size(); ++i) {
    Ctx nctx = ctx.Sub("node " + std::to_string(i) + ": ");
    json::Object obj = AsObject(nodes[i], nctx, "node");
    Node node;
    node.op = AsString(Required(obj, "op", nctx, "node"), nctx, "\"op\"");
    node.spec = LookupOp(node.op);
    if (node.spec == nullptr) {
      nctx.Fail("unknown op '" + node.op +
                "' (not a supported composite; see onednn.supported_composites())");
    }
    nctx = ctx.Sub("node " + std::to_string(i) + " (" + node.op + "): ");
    json::Array refs = AsArray(Required(obj, "inputs", nctx, "node"), nctx, "\"inputs\"");
    if (static_cast<int>(refs.size()) != node.spec->NumOperands()) {
      nctx.Fail("expects " + std::to_string(node.spec->NumOperands()) + " operands, got " +
                std::to_string(refs.size()));
    }
    for (size_t k = 0; k < refs.size(); ++k) {
      node.inputs.push_back(ParseRef(refs[k], g, static_cast<int64_t>(i), nctx,
                                     std::string("operand ") + std::to_string(k) + " (" +
                                         node.spec->OperandName(static_cast<int>(k)) + ")"));
    }
    json::Object attrs;
    if (auto f = Field(obj, "attrs")) {
      if (*f != nullptr) attrs = AsObject(*f, nctx, "\"attrs\"");
    }
    ParseAttrs(attrs, &node, nctx);
    auto fail = [&nctx](const std::string& msg) { nctx.Fail(msg); };
    std::optional<Any> quant = Field(obj, "quant");
    node.quant = ParseQuant(*node.spec, quant ? &*quant : nullptr, fail);
    node.out.shape =
        AsDims(Required(obj, "shape", nctx, "node"), nctx, "output shape", ShapeRole::kNodeOutput,
               &g);
    node.out.dtype = AsDType(Required(obj, "dtype", nctx, "node"), nctx, "output");
    ValidateNodeDTypes(g, node, nctx);
    ValidateNodeShapes(g, node, nctx);
    ValidateQuant(g, node, fail);
    g.nodes.push_back(std::move(node));
  }

  json::Array outputs = AsArray(Required(root, "outputs", ctx, "document"), ctx, "\"outputs\"");
  if (outputs.size() == 0) ctx.Fail("\"outputs\" must not be empty");
  for (size_t i = 0; i < outputs.size(); ++i) {
    g.outputs.push_back(ParseRef(outputs[i], g, static_cast<int64_t>(g.nodes.size()), ctx,
                                 "output " + std::to_string(i)));
  }
  return g;
}

}  // namespace tvm_onednn
