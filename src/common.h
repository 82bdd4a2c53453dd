/*!
 * \file common.h
 * \brief Shared helpers of the tvm-onednn runtime: dtypes, error helpers, the CPU engine.
 */
#ifndef TVM_ONEDNN_COMMON_H_
#define TVM_ONEDNN_COMMON_H_

#include <dlpack/dlpack.h>
#include <tvm/ffi/error.h>

#include <cstdint>
#include <oneapi/dnnl/dnnl.hpp>
#include <sstream>
#include <string>
#include <vector>

namespace tvm_onednn {

/*!
 * \brief Element type of one value of a subgraph.
 * Every value carries its own dtype: float32 values, and in int8 regions u8/s8 activations,
 * s8 weights (float32 biases). float16 / bfloat16 / int32 are parsed but not executable.
 */
enum class DType : uint8_t { kFloat32, kFloat16, kBFloat16, kInt8, kUInt8, kInt32 };

/*! \brief Name as written in the subgraph JSON ("float32", "int8", ...). */
const char* DTypeName(DType dtype);
/*! \brief Parse a JSON dtype name; returns false if unknown. */
bool ParseDType(const std::string& name, DType* out);
/*! \brief Bytes per element. */
size_t DTypeBytes(DType dtype);
/*! \brief The DLPack dtype a call argument of this dtype must have. */
DLDataType ToDLDataType(DType dtype);
/*! \brief The oneDNN data type. */
dnnl::memory::data_type ToDnnl(DType dtype);
/*! \brief Whether the runtime can execute values of this dtype (float32, uint8, int8). */
bool IsExecutableDType(DType dtype);
/*! \brief uint8 or int8 (a quantized value). */
inline bool IsInt8(DType dtype) { return dtype == DType::kInt8 || dtype == DType::kUInt8; }

/*! \brief "[1,3,224,224]" */
std::string ShapeStr(const std::vector<int64_t>& shape);
/*! \brief Number of elements. */
int64_t NumElements(const std::vector<int64_t>& shape);

/*! \brief The process-wide CPU engine (created on first use). */
const dnnl::engine& CpuEngine();

/*! \brief JSON string literal with escaping. */
std::string JsonQuote(const std::string& s);

}  // namespace tvm_onednn

#endif  // TVM_ONEDNN_COMMON_H_
