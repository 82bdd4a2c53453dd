/*!
 * \file pack_cache.h
 * \brief Constants packed into primitive layouts, shared by all plans of one module.
 *
 * A module with symbolic shapes builds one plan per shape; the weights' layout rarely depends
 * on the batch size, so a new plan finds its packed weights here instead of packing them again.
 * Entries are keyed by (constant index, destination desc, halved) and live as long as the
 * module; their number is bounded by the distinct layouts oneDNN picks.
 */
#ifndef TVM_ONEDNN_PACK_CACHE_H_
#define TVM_ONEDNN_PACK_CACHE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "memory.h"

namespace tvm_onednn {

class PackCache {
 public:
  /*!
   * \brief The packed copy of constant `index` in layout `md` (`halved`: int8 weights halved by
   *        the saturation guard). On the first request `pack(dst)` fills a new buffer of
   *        md.get_size() bytes; concurrent requests wait for it (only plan builds do).
   */
  std::shared_ptr<AlignedBuffer> Get(int index, const MemDesc& md, bool halved,
                                     const std::function<void(void* dst)>& pack);
  size_t size();
  /*! \brief Number of packs executed (cache misses). */
  uint64_t packs() const { return packs_.load(); }

 private:
  struct Entry {
    int index;
    bool halved;
    MemDesc md;
    std::shared_ptr<AlignedBuffer> data;
  };
  std::mutex mu_;
  std::vector<Entry> entries_;
  std::atomic<uint64_t> packs_{0};
};

}  // namespace tvm_onednn

#endif  // TVM_ONEDNN_PACK_CACHE_H_
