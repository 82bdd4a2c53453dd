/*!
 * \file plan_cache.cc
 * \brief PlanCache (LRU list + ordered index) and the process-wide capacity.
 */
#include "plan_cache.h"

#include <cerrno>
#include <cstdlib>
#include <string>

namespace tvm_onednn {

namespace {

constexpr const char* kCapacityEnv = "TVM_ONEDNN_PLAN_CACHE_SIZE";

int64_t CapacityFromEnv() {
  const char* text = std::getenv(kCapacityEnv);
  if (text == nullptr || *text == '\0') return kDefaultPlanCacheSize;
  char* end = nullptr;
  errno = 0;
  long long n = std::strtoll(text, &end, 10);
  if (errno != 0 || *end != '\0' || n < 1) {
    TVM_FFI_THROW(ValueError) << kCapacityEnv << "='" << text
                              << "' is not a positive integer (plans cached per module)";
  }
  return n;
}

std::atomic<int64_t>& Capacity() {
  static std::atomic<int64_t> capacity{CapacityFromEnv()};
  return capacity;
}

}  // namespace

int64_t PlanCacheCapacity() { return Capacity().load(std::memory_order_relaxed); }

void SetPlanCacheCapacity(int64_t n) {
  if (n < 1) {
    TVM_FFI_THROW(ValueError) << "onednn.set_plan_cache_size: n must be >= 1, got " << n;
  }
  Capacity().store(n);
}

std::shared_ptr<PlanEntry> PlanCache::Find(const Key& key, int generation) {
  Dropped dropped;  // destroyed after the lock is released
  std::lock_guard<std::mutex> lock(mu_);
  DropIfForked(generation, &dropped);
  auto it = index_.find(key);
  if (it == index_.end()) return nullptr;
  lru_.splice(lru_.begin(), lru_, it->second);
  Trim(&dropped);
  last_ = *it->second;
  return last_;
}

std::shared_ptr<PlanEntry> PlanCache::Insert(std::shared_ptr<PlanEntry> entry, int generation) {
  Dropped dropped;  // destroyed after the lock is released
  std::lock_guard<std::mutex> lock(mu_);
  DropIfForked(generation, &dropped);
  built_.fetch_add(1);
  auto it = index_.find(entry->key);
  if (it != index_.end()) {
    lru_.splice(lru_.begin(), lru_, it->second);
    last_ = *it->second;
    return last_;
  }
  lru_.push_front(entry);
  index_.emplace(entry->key, lru_.begin());
  Trim(&dropped);
  last_ = std::move(entry);
  return last_;
}

std::shared_ptr<PlanEntry> PlanCache::last() {
  std::lock_guard<std::mutex> lock(mu_);
  return last_;
}

size_t PlanCache::size() {
  std::lock_guard<std::mutex> lock(mu_);
  return lru_.size();
}

void PlanCache::DropIfForked(int generation, Dropped* dropped) {
  if (generation == generation_) return;
  // The parent's primitives were made for its OpenMP threads: rebuild on demand.
  index_.clear();
  dropped->insert(dropped->end(), lru_.begin(), lru_.end());
  lru_.clear();
  dropped->push_back(std::move(last_));
  generation_ = generation;
}

void PlanCache::Trim(Dropped* dropped) {
  size_t capacity = static_cast<size_t>(PlanCacheCapacity());
  while (lru_.size() > capacity) {
    index_.erase(lru_.back()->key);
    dropped->push_back(std::move(lru_.back()));
    lru_.pop_back();
    evictions_.fetch_add(1);
  }
}

}  // namespace tvm_onednn
