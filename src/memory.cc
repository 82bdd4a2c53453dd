/*!
 * \file memory.cc
 * \brief Layout helpers and the slot allocator.
 */
#include "memory.h"

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <numeric>
#include <string>

namespace tvm_onednn {

MemDesc PlainDesc(const std::vector<int64_t>& dims, DType dtype) {
  Dims d(dims.begin(), dims.end());
  if (d.empty()) d.push_back(1);  // a scalar (rank-0 constant) is one element
  Dims strides(d.size(), 1);
  for (int i = static_cast<int>(d.size()) - 2; i >= 0; --i) strides[i] = strides[i + 1] * d[i + 1];
  return MemDesc(d, ToDnnl(dtype), strides);
}

MemDesc PlainLike(const MemDesc& md) {
  Dims d = md.get_dims();
  Dims strides(d.size(), 1);
  for (int i = static_cast<int>(d.size()) - 2; i >= 0; --i) strides[i] = strides[i + 1] * d[i + 1];
  return MemDesc(d, md.get_data_type(), strides);
}

std::string FormatStr(const MemDesc& md) {
  if (!md || md.get_ndims() == 0) return "undef";
  auto kind = md.get_format_kind();
  if (kind == dnnl::memory::format_kind::any) return "any";
  if (kind != dnnl::memory::format_kind::blocked) return "opaque";
  int nd = md.get_ndims();
  Dims strides = md.get_strides();
  Dims blks = md.get_inner_blks();
  Dims idxs = md.get_inner_idxs();
  std::vector<bool> blocked(nd, false);
  for (auto i : idxs) blocked[i] = true;
  std::vector<int> order(nd);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return strides[a] > strides[b]; });
  std::string s;
  for (int d : order) s += static_cast<char>((blocked[d] ? 'A' : 'a') + d);
  for (size_t k = 0; k < blks.size(); ++k) {
    s += std::to_string(blks[k]);
    s += static_cast<char>('a' + idxs[k]);
  }
  return s;
}

namespace {

/*!
 * \brief Per-dimension offset contribution f_d(i) of a blocked desc (the element offset of a
 *        blocked layout is additively separable over dimensions).
 */
bool DimOffsets(const MemDesc& md, int d, std::vector<int64_t>* out) {
  Dims dims = md.get_dims();
  Dims strides = md.get_strides();
  Dims blks = md.get_inner_blks();
  Dims idxs = md.get_inner_idxs();
  int nb = static_cast<int>(blks.size());
  // stride of each inner block position (mixed radix, innermost last)
  std::vector<int64_t> inner_stride(nb, 1);
  for (int k = nb - 2; k >= 0; --k) inner_stride[k] = inner_stride[k + 1] * blks[k + 1];
  int64_t block_total = 1;
  for (int k = 0; k < nb; ++k) {
    if (idxs[k] == d) block_total *= blks[k];
  }
  out->resize(dims[d]);
  for (int64_t i = 0; i < dims[d]; ++i) {
    int64_t off = (i / block_total) * strides[d];
    int64_t rem = i % block_total;
    int64_t remaining = block_total;
    for (int k = 0; k < nb; ++k) {
      if (idxs[k] != d) continue;
      remaining /= blks[k];
      int64_t digit = rem / remaining;
      rem %= remaining;
      off += digit * inner_stride[k];
    }
    (*out)[i] = off;
  }
  return true;
}

}  // namespace

namespace {

bool SameLayoutImpl(const MemDesc& a, const MemDesc& b, bool same_size_types) {
  if (a == b) return true;
  if (!a || !b) return false;
  if (a.get_format_kind() != dnnl::memory::format_kind::blocked ||
      b.get_format_kind() != dnnl::memory::format_kind::blocked) {
    return false;
  }
  if (a.get_data_type() != b.get_data_type()) {
    if (!same_size_types ||
        DataTypeBytes(a.get_data_type()) != DataTypeBytes(b.get_data_type())) {
      return false;
    }
  }
  if (a.get_dims() != b.get_dims()) return false;
  if (a.get_size() != b.get_size()) return false;
  int nd = a.get_ndims();
  std::vector<int64_t> fa, fb;
  for (int d = 0; d < nd; ++d) {
    DimOffsets(a, d, &fa);
    DimOffsets(b, d, &fb);
    if (fa != fb) return false;
  }
  return true;
}

}  // namespace

bool SameLayout(const MemDesc& a, const MemDesc& b) { return SameLayoutImpl(a, b, false); }

bool SameElementLayout(const MemDesc& a, const MemDesc& b) { return SameLayoutImpl(a, b, true); }

const char* DataTypeName(dnnl::memory::data_type dt) {
  using t = dnnl::memory::data_type;
  switch (dt) {
    case t::f32:
      return "f32";
    case t::s32:
      return "s32";
    case t::f16:
      return "f16";
    case t::bf16:
      return "bf16";
    case t::s8:
      return "s8";
    case t::u8:
      return "u8";
    default:
      return "undef";
  }
}

size_t DataTypeBytes(dnnl::memory::data_type dt) {
  using t = dnnl::memory::data_type;
  switch (dt) {
    case t::f32:
    case t::s32:
      return 4;
    case t::f16:
    case t::bf16:
      return 2;
    case t::s8:
    case t::u8:
      return 1;
    default:
      return 0;
  }
}

std::optional<MemDesc> WithDataType(const MemDesc& md, dnnl::memory::data_type dt) {
  if (md.get_data_type() == dt) return md;
  if (!md || md.get_format_kind() != dnnl::memory::format_kind::blocked) return std::nullopt;
  try {
    if (md.get_inner_nblks() == 0) return MemDesc(md.get_dims(), dt, md.get_strides());
    // Blocked layouts have no public constructor from strides + blocks: a binary primitive's
    // `any` dst follows src0's layout.
    MemDesc any(md.get_dims(), dt, dnnl::memory::format_tag::any);
    dnnl::binary::primitive_desc pd(CpuEngine(), dnnl::algorithm::binary_add, md, md, any);
    MemDesc out = pd.dst_desc();
    if (out.get_data_type() != dt) return std::nullopt;
    if (DataTypeBytes(dt) == DataTypeBytes(md.get_data_type()) && !SameElementLayout(out, md)) {
      return std::nullopt;
    }
    return out;
  } catch (const dnnl::error&) {
    return std::nullopt;
  }
}

bool IsPlain(const MemDesc& md) { return SameLayout(md, PlainLike(md)); }

std::optional<MemDesc> TryReshape(const MemDesc& md, const Dims& dims) {
  if (md.get_dims() == dims) return md;
  try {
    return md.reshape(dims);
  } catch (const dnnl::error&) {
    return std::nullopt;
  }
}

namespace {
constexpr size_t kHugePage = size_t{2} << 20;
constexpr size_t kPage = 4096, kLine = 64;
std::atomic<uint32_t> g_buffer_count{0};

bool HugePagesEnabled() {
  static const bool enabled = [] {
    const char* v = std::getenv("TVM_ONEDNN_HUGEPAGES");
    return v == nullptr || std::string(v) != "0";
  }();
  return enabled;
}

}  // namespace

AlignedBuffer::AlignedBuffer(size_t bytes) : size_(bytes) {
  // A buffer of a huge page or more starts on a huge-page boundary and asks for transparent
  // huge pages (honoured when THP is "always" or "madvise"; TVM_ONEDNN_HUGEPAGES=0 turns it
  // off): large activations and weights then cost few TLB misses. Buffers of a page or more
  // start at staggered cache-line offsets within a page ("colouring"), so that the source
  // and destination streams of a kernel do not alias at the same page offset.
  bool huge = HugePagesEnabled() && bytes >= kHugePage;
  size_t align = huge ? kHugePage : kLine;
  size_t offset = 0;
  if (bytes >= kPage) {
    uint32_t n = g_buffer_count.fetch_add(1, std::memory_order_relaxed);
    offset = (n * 23u % (kPage / kLine)) * kLine;  // 23 is coprime with 64: all 64 offsets
  }
  size_t rounded = (bytes + offset + align - 1) / align * align;
  void* p = std::aligned_alloc(align, std::max(rounded, align));
  if (p == nullptr) {
    TVM_FFI_THROW(RuntimeError) << "onednn: failed to allocate " << bytes << " bytes";
  }
  if (huge) madvise(p, rounded, MADV_HUGEPAGE);  // advisory: failure leaves normal pages
  base_.reset(p);
  data_ = static_cast<char*>(p) + offset;
}

void AlignedBuffer::Free::operator()(void* p) const { std::free(p); }

int SlotAllocator::Alloc(size_t bytes) {
  int best = -1;
  // Smallest free slot that fits; otherwise the largest free slot (grown).
  for (size_t i = 0; i < sizes_.size(); ++i) {
    if (in_use_[i] || sizes_[i] < bytes) continue;
    if (best < 0 || sizes_[i] < sizes_[best]) best = static_cast<int>(i);
  }
  if (best < 0) {
    for (size_t i = 0; i < sizes_.size(); ++i) {
      if (in_use_[i]) continue;
      if (best < 0 || sizes_[i] > sizes_[best]) best = static_cast<int>(i);
    }
  }
  if (best < 0) {
    sizes_.push_back(bytes);
    in_use_.push_back(true);
    return static_cast<int>(sizes_.size() - 1);
  }
  sizes_[best] = std::max(sizes_[best], bytes);
  in_use_[best] = true;
  return best;
}

void SlotAllocator::Release(int slot) {
  if (slot >= 0 && slot < static_cast<int>(in_use_.size())) in_use_[slot] = false;
}

size_t SlotAllocator::TotalBytes() const {
  size_t total = 0;
  for (size_t s : sizes_) total += s;
  return total;
}

}  // namespace tvm_onednn
