/*!
 * \file module.h
 * \brief The `onednn_json` runtime module (one offloaded region).
 */
#ifndef TVM_ONEDNN_MODULE_H_
#define TVM_ONEDNN_MODULE_H_

#include <tvm/ffi/cast.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/string.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "executor.h"
#include "graph.h"
#include "pack_cache.h"
#include "plan.h"
#include "plan_cache.h"

namespace tvm_onednn {

namespace ffi = ::tvm::ffi;

/*! \brief Module kind, also the suffix of the loader global `ffi.Module.load_from_bytes.<kind>`. */
constexpr const char* kModuleKind = "onednn_json";
/*! \brief Magic + version of SaveToBytes' header. */
constexpr char kBytesMagic[8] = {'T', 'V', 'M', 'O', 'N', 'E', 'D', 'N'};
constexpr uint32_t kBytesFormatVersion = 1;

class OneDNNJSONModule : public ffi::ModuleObj {
 public:
  explicit OneDNNJSONModule(std::string json);

  const char* kind() const final { return kModuleKind; }
  int GetPropertyMask() const final {
    return ffi::Module::kBinarySerializable | ffi::Module::kRunnable;
  }
  ffi::Optional<ffi::Function> GetFunction(const ffi::String& name) final;
  ffi::Bytes SaveToBytes() const final;
  ffi::String InspectSource(const ffi::String& format) const final { return json_; }

  /*! \brief `onednn.create_module(json)`. */
  static ffi::Module Create(const std::string& json);
  /*! \brief Loader `ffi.Module.load_from_bytes.onednn_json`. */
  static ffi::Module LoadFromBytes(const ffi::Bytes& bytes);

 private:
  void Init(const ffi::Array<ffi::Tensor>& consts);
  void EnsureInitialized();
  /*! \brief A graph without symbols: the one plan built at init. */
  void Call(ffi::PackedArgs args);
  /*! \brief A graph with symbols: bind them, then run the cached plan of that shape. */
  void CallDynamic(ffi::PackedArgs args);
  /*! \brief The plan for symbol values `key`, built (outside the cache lock) when missing. */
  std::shared_ptr<PlanEntry> PlanFor(const std::vector<int64_t>& key);
  /*! \brief The plan behind get_kernel_info / get_stats: static, or the last one used. */
  const Plan* ReportedPlan(std::shared_ptr<PlanEntry>* hold, ContextPool** pool);
  std::string KernelInfoJson();
  std::string StatsJson();

  std::string json_;
  Graph graph_;
  std::mutex init_mu_;
  std::atomic<bool> initialized_{false};
  void RebuildAfterFork();

  std::vector<ffi::Tensor> consts_;  // kept to rebuild the plan in a forked child
  PackCache packs_;                  // packed constants, shared by all plans
  // static graph
  std::atomic<int> plan_generation_{0};  // ForkGeneration() when plan_ was built
  std::unique_ptr<Plan> plan_;
  std::unique_ptr<ContextPool> pool_;
  std::atomic<uint64_t> static_builds_{0};
  std::atomic<double> last_build_ms_{0};  // of the most recently built plan
  // dynamic graph
  PlanCache plans_;
  std::atomic<uint64_t> calls_{0};
};

}  // namespace tvm_onednn

#endif  // TVM_ONEDNN_MODULE_H_
