/*!
 * \file common.cc
 * \brief dtype helpers and the shared CPU engine.
 */
#include "common.h"

#include <cstdio>

namespace tvm_onednn {

const char* DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return "float32";
    case DType::kFloat16:
      return "float16";
    case DType::kBFloat16:
      return "bfloat16";
    case DType::kInt8:
      return "int8";
    case DType::kUInt8:
      return "uint8";
    case DType::kInt32:
      return "int32";
  }
  return "unknown";
}

bool ParseDType(const std::string& name, DType* out) {
  static const std::pair<const char*, DType> kTable[] = {
      {"float32", DType::kFloat32}, {"float16", DType::kFloat16}, {"bfloat16", DType::kBFloat16},
      {"int8", DType::kInt8},       {"uint8", DType::kUInt8},     {"int32", DType::kInt32},
  };
  for (const auto& kv : kTable) {
    if (name == kv.first) {
      *out = kv.second;
      return true;
    }
  }
  return false;
}

size_t DTypeBytes(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
    case DType::kInt32:
      return 4;
    case DType::kFloat16:
    case DType::kBFloat16:
      return 2;
    case DType::kInt8:
    case DType::kUInt8:
      return 1;
  }
  return 0;
}

DLDataType ToDLDataType(DType dtype) {
  DLDataType t;
  t.lanes = 1;
  switch (dtype) {
    case DType::kFloat32:
      t.code = kDLFloat, t.bits = 32;
      break;
    case DType::kFloat16:
      t.code = kDLFloat, t.bits = 16;
      break;
    case DType::kBFloat16:
      t.code = kDLBfloat, t.bits = 16;
      break;
    case DType::kInt8:
      t.code = kDLInt, t.bits = 8;
      break;
    case DType::kUInt8:
      t.code = kDLUInt, t.bits = 8;
      break;
    case DType::kInt32:
      t.code = kDLInt, t.bits = 32;
      break;
  }
  return t;
}

dnnl::memory::data_type ToDnnl(DType dtype) {
  using dt = dnnl::memory::data_type;
  switch (dtype) {
    case DType::kFloat32:
      return dt::f32;
    case DType::kFloat16:
      return dt::f16;
    case DType::kBFloat16:
      return dt::bf16;
    case DType::kInt8:
      return dt::s8;
    case DType::kUInt8:
      return dt::u8;
    case DType::kInt32:
      return dt::s32;
  }
  return dt::undef;
}

bool IsExecutableDType(DType dtype) { return dtype == DType::kFloat32 || IsInt8(dtype); }

std::string ShapeStr(const std::vector<int64_t>& shape) {
  std::ostringstream os;
  os << '[';
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) os << ',';
    os << shape[i];
  }
  os << ']';
  return os.str();
}

int64_t NumElements(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

const dnnl::engine& CpuEngine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

std::string JsonQuote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\r':
        out += "\\r";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", c);
          out += buf;
        } else {
          out += c;
        }
    }
  }
  out += '"';
  return out;
}

}  // namespace tvm_onednn
