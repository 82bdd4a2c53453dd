/*!
 * \file shapes.h
 * \brief Symbolic shapes at call time: binding the symbols of a dynamic graph from the call's
 *        tensors and making the concrete graph the planner runs.
 */
#ifndef TVM_ONEDNN_SHAPES_H_
#define TVM_ONEDNN_SHAPES_H_

#include <cstdint>
#include <string>
#include <vector>

#include "graph.h"

namespace tvm_onednn {

/*! \brief The values of a graph's symbols for one call (0 = not bound yet). */
struct SymbolBinding {
  explicit SymbolBinding(size_t num_symbols) : values(num_symbols, 0), source(num_symbols, -1) {}
  std::vector<int64_t> values;
  std::vector<int> source;  // input whose shape bound the symbol
};

/*!
 * \brief Match the dims of a tensor against a declared (possibly symbolic) shape of the same
 *        rank. Static dims must be equal; a symbol is bound by its first occurrence (value >= 1)
 *        and must agree with it afterwards.
 * \param input index of the input the tensor is (binds symbols), or -1 for an output (checks
 *        against the values bound by the inputs).
 * \return "" on success, else the complete message after "<symbol>: ", e.g.
 *         "input 0 has shape [2,4,224,224], expected [n,3,224,224] (dim 1)".
 */
std::string MatchDims(const Graph& g, const int64_t* dims, const std::vector<int64_t>& want,
                      const std::string& who, int input, SymbolBinding* binding);

/*! \brief `shape` with every symbol replaced by its value. */
std::vector<int64_t> ConcreteShape(const std::vector<int64_t>& shape,
                                   const std::vector<int64_t>& values);

/*! \brief A copy of `g` with every symbolic dim replaced by its value (no symbols left). */
Graph Concretize(const Graph& g, const std::vector<int64_t>& values);

/*! \brief "n=3, s=7" */
std::string BindingStr(const Graph& g, const std::vector<int64_t>& values);

}  // namespace tvm_onednn

#endif  // TVM_ONEDNN_SHAPES_H_
