/*!
 * \file memory.h
 * \brief Memory-layout helpers (plain descs, layout strings, physical layout equality) and the
 *        buffer-slot allocator used by memory planning.
 */
#ifndef TVM_ONEDNN_MEMORY_H_
#define TVM_ONEDNN_MEMORY_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common.h"

namespace tvm_onednn {

using MemDesc = dnnl::memory::desc;
using Dims = dnnl::memory::dims;

/*! \brief Row-major (plain) desc of the given logical dims ([] is viewed as [1]). */
MemDesc PlainDesc(const std::vector<int64_t>& dims, DType dtype);
/*! \brief Plain desc with the same dims and data type as `md`. */
MemDesc PlainLike(const MemDesc& md);
/*! \brief oneDNN-verbose style layout string: "abcd", "aBcd8b", "Acdb16a", "any", ... */
std::string FormatStr(const MemDesc& md);
/*!
 * \brief True when both descs address every element at the same byte offset and have the same
 *        total size (so one buffer can be viewed through either desc without a reorder).
 *        E.g. nchw and nChw16c of [1, 2048, 1, 1].
 */
bool SameLayout(const MemDesc& a, const MemDesc& b);
/*!
 * \brief SameLayout, but the data types may differ when their element sizes are equal
 *        (u8 / s8): one buffer can then be read as either type through either desc.
 */
bool SameElementLayout(const MemDesc& a, const MemDesc& b);
/*! \brief `md` with another data type and the same element layout; nullopt if not expressible. */
std::optional<MemDesc> WithDataType(const MemDesc& md, dnnl::memory::data_type dt);
/*! \brief oneDNN-verbose name of a data type: "f32", "u8", "s8", ... */
const char* DataTypeName(dnnl::memory::data_type dt);
/*! \brief Bytes per element of a oneDNN data type. */
size_t DataTypeBytes(dnnl::memory::data_type dt);
/*! \brief SameLayout(md, PlainLike(md)). */
bool IsPlain(const MemDesc& md);
/*! \brief md.reshape(dims) or nullopt when oneDNN cannot express it. */
std::optional<MemDesc> TryReshape(const MemDesc& md, const Dims& dims);

/*! \brief Heap buffer: 64-byte aligned, cache-line coloured, huge pages when large (memory.cc). */
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(size_t bytes);
  void* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  struct Free {
    void operator()(void* p) const;
  };
  std::unique_ptr<void, Free> base_;
  void* data_ = nullptr;
  size_t size_ = 0;
};

/*!
 * \brief Greedy best-fit assignment of intermediate values to reusable buffer slots. Sizes are
 *        final only after planning; each execution context then allocates one buffer per slot.
 */
class SlotAllocator {
 public:
  int Alloc(size_t bytes);
  void Release(int slot);
  const std::vector<size_t>& sizes() const { return sizes_; }
  size_t TotalBytes() const;

 private:
  std::vector<size_t> sizes_;
  std::vector<bool> in_use_;
};

}  // namespace tvm_onednn

#endif  // TVM_ONEDNN_MEMORY_H_
