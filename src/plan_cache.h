/*!
 * \file plan_cache.h
 * \brief The shape-keyed plan cache of a module with symbolic dims: symbol values -> {concrete
 *        graph, Plan, ContextPool}, least recently used first out.
 *
 * Calls hold an entry by shared_ptr, so an entry evicted (or dropped after a fork) while a call
 * runs on it lives until that call ends. The lock is held only to look up, insert and evict:
 * plans are built outside it, so a build does not block calls at cached shapes.
 */
#ifndef TVM_ONEDNN_PLAN_CACHE_H_
#define TVM_ONEDNN_PLAN_CACHE_H_

#include <atomic>
#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "executor.h"
#include "graph.h"
#include "plan.h"

namespace tvm_onednn {

/*! \brief Default capacity, when TVM_ONEDNN_PLAN_CACHE_SIZE is not set. */
constexpr int64_t kDefaultPlanCacheSize = 16;

/*!
 * \brief Process-wide capacity (plans per module): TVM_ONEDNN_PLAN_CACHE_SIZE when set (read
 *        once), else kDefaultPlanCacheSize, until onednn.set_plan_cache_size changes it.
 */
int64_t PlanCacheCapacity();
void SetPlanCacheCapacity(int64_t n);

/*! \brief One concrete shape of a module: its graph, plan and execution contexts. */
struct PlanEntry {
  std::vector<int64_t> key;  // symbol values
  Graph graph;
  std::unique_ptr<Plan> plan;
  std::unique_ptr<ContextPool> pool;  // declared after plan: destroyed first
  double build_ms = 0;
};

class PlanCache {
 public:
  using Key = std::vector<int64_t>;

  /*!
   * \brief The entry for `key` (now the most recently used) or nullptr. When the process forked
   *        since the entries were built (`generation` differs), all entries are dropped first.
   */
  std::shared_ptr<PlanEntry> Find(const Key& key, int generation);
  /*!
   * \brief Insert a built entry, unless another thread inserted the same key meanwhile (that
   *        entry is returned then); evicts the least recently used beyond the capacity.
   */
  std::shared_ptr<PlanEntry> Insert(std::shared_ptr<PlanEntry> entry, int generation);

  /*! \brief The entry most recently returned by Find / Insert (nullptr if none). */
  std::shared_ptr<PlanEntry> last();
  size_t size();
  uint64_t built() const { return built_.load(); }
  uint64_t evictions() const { return evictions_.load(); }

 private:
  using Dropped = std::vector<std::shared_ptr<PlanEntry>>;
  void DropIfForked(int generation, Dropped* dropped);  // mu_ held
  void Trim(Dropped* dropped);                          // mu_ held

  std::mutex mu_;
  std::list<std::shared_ptr<PlanEntry>> lru_;  // front = most recently used
  std::map<Key, std::list<std::shared_ptr<PlanEntry>>::iterator> index_;
  std::shared_ptr<PlanEntry> last_;
  int generation_ = 0;
  std::atomic<uint64_t> built_{0};
  std::atomic<uint64_t> evictions_{0};
};

}  // namespace tvm_onednn

#endif  // TVM_ONEDNN_PLAN_CACHE_H_
