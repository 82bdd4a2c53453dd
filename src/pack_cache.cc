/*!
 * \file pack_cache.cc
 * \brief PackCache: a linear list (a module has few constants times few layouts).
 */
#include "pack_cache.h"

namespace tvm_onednn {

std::shared_ptr<AlignedBuffer> PackCache::Get(int index, const MemDesc& md, bool halved,
                                              const std::function<void(void* dst)>& pack) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const Entry& e : entries_) {
    if (e.index == index && e.halved == halved && e.md == md) return e.data;
  }
  auto data = std::make_shared<AlignedBuffer>(md.get_size());
  pack(data->data());
  packs_.fetch_add(1);
  entries_.push_back({index, halved, md, data});
  return data;
}

size_t PackCache::size() {
  std::lock_guard<std::mutex> lock(mu_);
  return entries_.size();
}

}  // namespace tvm_onednn
