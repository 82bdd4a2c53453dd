/*!
 * \file shapes.cc
 * \brief Symbol binding and graph concretization.
 */
#include "shapes.h"

namespace tvm_onednn {

std::string MatchDims(const Graph& g, const int64_t* dims, const std::vector<int64_t>& want,
                      const std::string& who, int input, SymbolBinding* binding) {
  std::vector<int64_t> got(dims, dims + want.size());
  auto mismatch = [&](size_t i, const std::string& detail) {
    return who + " has shape " + ShapeStr(got) + ", expected " + g.DimsStr(want) + " (" +
           detail + ")";
  };
  for (size_t i = 0; i < want.size(); ++i) {
    int64_t w = want[i];
    if (!IsSymbolic(w)) {
      if (got[i] != w) return mismatch(i, "dim " + std::to_string(i));
      continue;
    }
    size_t k = SymbolIndex(w);
    const std::string& name = g.symbols[k];
    int64_t& value = binding->values[k];
    if (got[i] < 1) {
      return mismatch(i, "dim " + std::to_string(i) + ": symbol " + name + " must be >= 1");
    }
    if (value == 0 && input >= 0) {
      value = got[i];
      binding->source[k] = input;
    } else if (got[i] != value) {
      if (input < 0) {
        return mismatch(i, "dim " + std::to_string(i) + ": " + name + "=" +
                               std::to_string(value) + " from input " +
                               std::to_string(binding->source[k]));
      }
      return "symbol " + name + " is " + std::to_string(value) + " in input " +
             std::to_string(binding->source[k]) + " but " + std::to_string(got[i]) +
             " in input " + std::to_string(input) + " (dim " + std::to_string(i) + " of " +
             ShapeStr(got) + ", declared " + g.DimsStr(want) + ")";
    }
  }
  return "";
}

std::vector<int64_t> ConcreteShape(const std::vector<int64_t>& shape,
                                   const std::vector<int64_t>& values) {
  std::vector<int64_t> out = shape;
  for (int64_t& d : out) {
    if (IsSymbolic(d)) d = values.at(SymbolIndex(d));
  }
  return out;
}

Graph Concretize(const Graph& g, const std::vector<int64_t>& values) {
  Graph c = g;
  for (TensorInfo& t : c.inputs) t.shape = ConcreteShape(t.shape, values);
  for (Node& n : c.nodes) n.out.shape = ConcreteShape(n.out.shape, values);
  c.symbols.clear();
  return c;
}

std::string BindingStr(const Graph& g, const std::vector<int64_t>& values) {
  std::string out;
  for (size_t k = 0; k < g.symbols.size() && k < values.size(); ++k) {
    out += (k ? ", " : "") + g.symbols[k] + "=" + std::to_string(values[k]);
  }
  return out;
}

}  // namespace tvm_onednn
