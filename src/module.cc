/*!
 * \file module.cc
 * \brief OneDNNJSONModule: function table, argument checking, (de)serialization.
 */
#include "module.h"

#include <chrono>
#include <cstring>
#include <sstream>

#include "shapes.h"

namespace tvm_onednn {

namespace {

std::string DLTypeStr(const DLDataType& t) {
  std::ostringstream os;
  switch (t.code) {
    case kDLFloat:
      os << "float";
      break;
    case kDLInt:
      os << "int";
      break;
    case kDLUInt:
      os << (t.bits == 1 ? "bool" : "uint");
      break;
    case kDLBfloat:
      os << "bfloat";
      break;
    default:
      os << "type" << static_cast<int>(t.code) << "_";
  }
  if (!(t.code == kDLUInt && t.bits == 1)) os << static_cast<int>(t.bits);
  if (t.lanes != 1) os << "x" << t.lanes;
  return os.str();
}

std::vector<int64_t> ShapeOf(const DLTensor* t) {
  return std::vector<int64_t>(t->shape, t->shape + t->ndim);
}

/*! \brief "onednn_0: input 2" -- built only when an error is reported. */
struct Who {
  const std::string& symbol;
  const char* kind;  // "input", "output", "constant"
  size_t index;
  const std::string* name = nullptr;
};

std::ostream& operator<<(std::ostream& os, const Who& w) {
  os << w.symbol << ": " << w.kind << ' ' << w.index;
  if (w.name) os << " (" << *w.name << ')';
  return os;
}

/*! \brief Checks every tensor gets before its shape: present, on the CPU, of the right dtype. */
void CheckHeader(const DLTensor* t, const TensorInfo& info, const Who& who) {
  if (t == nullptr) TVM_FFI_THROW(ValueError) << who << " is a null tensor";
  if (t->device.device_type != kDLCPU && t->device.device_type != kDLCUDAHost) {
    TVM_FFI_THROW(ValueError) << who << " is on device type " << t->device.device_type
                              << ", expected a CPU tensor";
  }
  DLDataType want = ToDLDataType(info.dtype);
  if (t->dtype.code != want.code || t->dtype.bits != want.bits || t->dtype.lanes != want.lanes) {
    TVM_FFI_THROW(TypeError) << who << " has dtype " << DLTypeStr(t->dtype) << ", expected "
                             << DTypeName(info.dtype);
  }
}

/*! \brief Checks after the shape: compact row-major data. */
void CheckLayout(const DLTensor* t, const Who& who) {
  if (!ffi::IsContiguous(*t)) {
    TVM_FFI_THROW(ValueError) << who << " is not compact (row-major contiguous); strides "
                              << ShapeStr(std::vector<int64_t>(t->strides, t->strides + t->ndim));
  }
  if (t->data == nullptr) TVM_FFI_THROW(ValueError) << who << " has a null data pointer";
}

/*! \brief Check one tensor against the expected static info (dtype, shape, CPU, compact). */
void CheckTensor(const DLTensor* t, const TensorInfo& info, const Who& who) {
  CheckHeader(t, info, who);
  if (t->ndim != static_cast<int>(info.shape.size())) {
    TVM_FFI_THROW(ValueError) << who << " has shape " << ShapeStr(ShapeOf(t)) << " (" << t->ndim
                              << "-D), expected " << ShapeStr(info.shape);
  }
  for (int i = 0; i < t->ndim; ++i) {
    if (t->shape[i] != info.shape[i]) {
      TVM_FFI_THROW(ValueError) << who << " has shape " << ShapeStr(ShapeOf(t)) << ", expected "
                                << ShapeStr(info.shape);
    }
  }
  CheckLayout(t, who);
}

/*!
 * \brief CheckTensor for a (possibly) symbolic shape: an input binds its symbols into
 *        `binding` (`input` >= 0), an output is checked against the bound values (`input` -1).
 */
void CheckSymbolicTensor(const DLTensor* t, const Graph& g, const TensorInfo& info,
                         const Who& who, int input, SymbolBinding* binding) {
  CheckHeader(t, info, who);
  if (t->ndim != static_cast<int>(info.shape.size())) {
    TVM_FFI_THROW(ValueError) << who << " has shape " << ShapeStr(ShapeOf(t)) << " (" << t->ndim
                              << "-D), expected " << g.DimsStr(info.shape);
  }
  std::string where = std::string(who.kind) + " " + std::to_string(who.index);
  std::string err = MatchDims(g, t->shape, info.shape, where, input, binding);
  if (!err.empty()) TVM_FFI_THROW(ValueError) << who.symbol << ": " << err;
  CheckLayout(t, who);
}

double MillisecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
      .count();
}

/*! \brief A call passes one tensor per region input and output. */
void CheckArgCount(const std::string& sym, const ffi::PackedArgs& args, size_t n_in,
                   size_t n_out) {
  if (static_cast<size_t>(args.size()) != n_in + n_out) {
    TVM_FFI_THROW(TypeError) << sym << ": expects " << n_in + n_out << " arguments (" << n_in
                             << " input(s) + " << n_out << " output(s)), got " << args.size();
  }
}

/*! \brief Call argument i as a tensor (inputs first, then outputs). */
DLTensor* TensorArg(const std::string& sym, const ffi::PackedArgs& args, size_t i,
                    size_t n_in) {
  auto t = args[static_cast<int>(i)].try_cast<DLTensor*>();
  if (!t.has_value()) {
    bool is_in = i < n_in;
    TVM_FFI_THROW(TypeError) << sym << ": " << (is_in ? "input " : "output ")
                             << (is_in ? i : i - n_in) << " must be a Tensor, got "
                             << args[static_cast<int>(i)].GetTypeKey();
  }
  return *t;
}

template <typename F>
auto GuardDnnl(const std::string& symbol, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const dnnl::error& e) {
    TVM_FFI_THROW(RuntimeError) << symbol << ": oneDNN error: " << e.what();
  }
  TVM_FFI_UNREACHABLE();
}

}  // namespace

OneDNNJSONModule::OneDNNJSONModule(std::string json)
    : json_(std::move(json)), graph_(ParseGraph(json_)) {}

ffi::Module OneDNNJSONModule::Create(const std::string& json) {
  return ffi::Module(ffi::make_object<OneDNNJSONModule>(json));
}

ffi::Optional<ffi::Function> OneDNNJSONModule::GetFunction(const ffi::String& name) {
  ffi::ObjectPtr<ffi::Object> self = ffi::GetObjectPtr<ffi::Object>(this);
  const std::string& sym = graph_.symbol;
  if (name == "get_symbol") {
    return ffi::Function::FromTyped([self, this]() { return ffi::String(graph_.symbol); });
  }
  if (name == "get_const_vars") {
    return ffi::Function::FromTyped([self, this]() {
      ffi::Array<ffi::String> names;
      for (const auto& c : graph_.constants) names.push_back(c.name);
      return names;
    });
  }
  if (name == "get_json") {
    return ffi::Function::FromTyped([self, this]() { return ffi::String(json_); });
  }
  if (name == "get_kernel_info") {
    return ffi::Function::FromTyped([self, this]() { return ffi::String(KernelInfoJson()); });
  }
  if (name == "get_stats") {
    return ffi::Function::FromTyped([self, this]() { return ffi::String(StatsJson()); });
  }
  if (name == "__init_" + sym) {
    return ffi::Function([self, this](ffi::PackedArgs args, ffi::Any* rv) {
      if (args.size() != 1) {
        TVM_FFI_THROW(TypeError) << graph_.symbol << ": __init_" << graph_.symbol
                                 << " takes 1 argument (Array<Tensor>), got " << args.size();
      }
      auto consts = args[0].try_cast<ffi::Array<ffi::Tensor>>();
      if (!consts.has_value()) {
        TVM_FFI_THROW(TypeError) << graph_.symbol << ": __init_" << graph_.symbol
                                 << " expects an Array<Tensor>, got " << args[0].GetTypeKey();
      }
      Init(*consts);
      *rv = 0;
    });
  }
  if (name == sym) {
    if (graph_.dynamic()) {
      return ffi::Function([self, this](ffi::PackedArgs args, ffi::Any* rv) { CallDynamic(args); });
    }
    return ffi::Function([self, this](ffi::PackedArgs args, ffi::Any* rv) { Call(args); });
  }
  return std::nullopt;
}

void OneDNNJSONModule::Init(const ffi::Array<ffi::Tensor>& consts) {
  std::lock_guard<std::mutex> lock(init_mu_);
  if (initialized_.load()) return;  // const_loader initializes once; repeated init is a no-op
  const std::string& sym = graph_.symbol;
  if (consts.size() != graph_.constants.size()) {
    TVM_FFI_THROW(ValueError) << sym << ": __init_" << sym << " got " << consts.size()
                              << " constant(s), expected " << graph_.constants.size();
  }
  std::vector<ffi::Tensor> tensors;
  for (size_t i = 0; i < consts.size(); ++i) {
    ffi::Tensor t = consts[i];
    CheckTensor(t.GetDLTensorPtr(), graph_.constants[i],
                Who{sym, "constant", i, &graph_.constants[i].name});
    tensors.push_back(t);
  }
  NoteOpenMPUse();
  consts_ = std::move(tensors);
  if (!graph_.dynamic()) {  // a dynamic graph builds its plans per shape, on demand
    auto start = std::chrono::steady_clock::now();
    plan_ = GuardDnnl(sym, [&]() { return BuildPlan(graph_, consts_, &packs_); });
    pool_ = std::make_unique<ContextPool>(plan_.get());
    plan_generation_ = ForkGeneration();
    last_build_ms_ = MillisecondsSince(start);
    static_builds_++;
  }
  initialized_.store(true);
}

void OneDNNJSONModule::RebuildAfterFork() {
  std::lock_guard<std::mutex> lock(init_mu_);
  int generation = ForkGeneration();
  if (plan_generation_ == generation) return;
  // The parent's primitives were made for its OpenMP threads, which the child does not have.
  pool_.reset();
  auto start = std::chrono::steady_clock::now();
  plan_ = GuardDnnl(graph_.symbol, [&]() { return BuildPlan(graph_, consts_, &packs_); });
  pool_ = std::make_unique<ContextPool>(plan_.get());
  plan_generation_ = generation;
  last_build_ms_ = MillisecondsSince(start);
  static_builds_++;
}

void OneDNNJSONModule::EnsureInitialized() {
  if (initialized_.load(std::memory_order_acquire)) return;
  if (!graph_.constants.empty()) {
    TVM_FFI_THROW(RuntimeError) << graph_.symbol << ": module is not initialized; call __init_"
                                << graph_.symbol << " with its " << graph_.constants.size()
                                << " constant(s) first";
  }
  Init(ffi::Array<ffi::Tensor>());
}

void OneDNNJSONModule::Call(ffi::PackedArgs args) {
  const std::string& sym = graph_.symbol;
  size_t n_in = graph_.inputs.size(), n_out = graph_.outputs.size();
  CheckArgCount(sym, args, n_in, n_out);
  constexpr size_t kSmall = 16;
  void* small[kSmall];
  std::vector<void*> big;
  void** ptrs = small;
  if (n_in + n_out > kSmall) {
    big.resize(n_in + n_out);
    ptrs = big.data();
  }
  for (size_t i = 0; i < n_in + n_out; ++i) {
    bool is_in = i < n_in;
    size_t idx = is_in ? i : i - n_in;
    DLTensor* t = TensorArg(sym, args, i, n_in);
    const TensorInfo& info = is_in ? graph_.inputs[idx] : graph_.Info(graph_.outputs[idx]);
    CheckTensor(t, info, Who{sym, is_in ? "input" : "output", idx});
    ptrs[i] = static_cast<char*>(t->data) + t->byte_offset;
  }
  EnsureInitialized();
  if (plan_generation_ != ForkGeneration()) RebuildAfterFork();
  GuardDnnl(sym, [&]() {
    ContextPool::Lease ctx = pool_->Acquire();
    ctx->Run(*plan_, ptrs, ptrs + n_in);
    return 0;
  });
  calls_.fetch_add(1, std::memory_order_relaxed);
}

void OneDNNJSONModule::CallDynamic(ffi::PackedArgs args) {
  const std::string& sym = graph_.symbol;
  size_t n_in = graph_.inputs.size(), n_out = graph_.outputs.size();
  CheckArgCount(sym, args, n_in, n_out);
  std::vector<void*> ptrs(n_in + n_out);
  SymbolBinding binding(graph_.symbols.size());
  for (size_t i = 0; i < n_in + n_out; ++i) {
    bool is_in = i < n_in;
    size_t idx = is_in ? i : i - n_in;
    DLTensor* t = TensorArg(sym, args, i, n_in);
    // Inputs come first, so every symbol is bound before the outputs are checked.
    const TensorInfo& info = is_in ? graph_.inputs[idx] : graph_.Info(graph_.outputs[idx]);
    CheckSymbolicTensor(t, graph_, info, Who{sym, is_in ? "input" : "output", idx},
                        is_in ? static_cast<int>(idx) : -1, &binding);
    ptrs[i] = static_cast<char*>(t->data) + t->byte_offset;
  }
  EnsureInitialized();
  std::shared_ptr<PlanEntry> entry = PlanFor(binding.values);
  GuardDnnl(sym, [&]() {
    ContextPool::Lease ctx = entry->pool->Acquire();
    ctx->Run(*entry->plan, ptrs.data(), ptrs.data() + n_in);
    return 0;
  });
  calls_.fetch_add(1, std::memory_order_relaxed);
}

std::shared_ptr<PlanEntry> OneDNNJSONModule::PlanFor(const std::vector<int64_t>& key) {
  int generation = ForkGeneration();
  if (std::shared_ptr<PlanEntry> hit = plans_.Find(key, generation)) return hit;
  auto start = std::chrono::steady_clock::now();
  auto entry = std::make_shared<PlanEntry>();
  entry->key = key;
  entry->graph = Concretize(graph_, key);
  entry->plan = GuardDnnl(graph_.symbol, [&]() {
    try {
      return BuildPlan(entry->graph, consts_, &packs_);
    } catch (const ffi::Error& e) {
      TVM_FFI_THROW(RuntimeError) << e.message() << " (building the plan for "
                                  << BindingStr(graph_, key) << ")";
    }
    TVM_FFI_UNREACHABLE();
  });
  entry->pool = std::make_unique<ContextPool>(entry->plan.get());
  entry->build_ms = MillisecondsSince(start);
  last_build_ms_ = entry->build_ms;
  return plans_.Insert(std::move(entry), generation);
}

const Plan* OneDNNJSONModule::ReportedPlan(std::shared_ptr<PlanEntry>* hold,
                                           ContextPool** pool) {
  if (!initialized_.load()) return nullptr;
  if (!graph_.dynamic()) {
    *pool = pool_.get();
    return plan_.get();
  }
  *hold = plans_.last();
  if (!*hold) return nullptr;
  *pool = (*hold)->pool.get();
  return (*hold)->plan.get();
}

std::string OneDNNJSONModule::KernelInfoJson() {
  EnsureInitialized();
  std::shared_ptr<PlanEntry> hold;
  ContextPool* pool = nullptr;
  const Plan* plan = ReportedPlan(&hold, &pool);
  std::ostringstream os;
  os << '[';
  for (size_t i = 0; plan != nullptr && i < plan->nodes.size(); ++i) {
    const NodeRecord& r = plan->nodes[i];
    if (i) os << ", ";
    os << "{\"node\": " << i << ", \"op\": " << JsonQuote(r.op)
       << ", \"impl\": " << JsonQuote(r.impl) << ", \"src_format\": " << JsonQuote(r.src_format)
       << ", \"weights_format\": " << JsonQuote(r.weights_format)
       << ", \"dst_format\": " << JsonQuote(r.dst_format)
       << ", \"residual\": " << JsonQuote(r.residual)
       << ", \"src_dtype\": " << JsonQuote(r.src_dtype)
       << ", \"dst_dtype\": " << JsonQuote(r.dst_dtype)
       << ", \"weights_rounding\": " << JsonQuote(r.weights_rounding)
       << ", \"direct_output\": " << (r.direct_output ? "true" : "false")
       << ", \"step\": " << r.step << '}';
  }
  os << ']';
  return os.str();
}

std::string OneDNNJSONModule::StatsJson() {
  std::ostringstream os;
  bool init = initialized_.load();
  bool dynamic = graph_.dynamic();
  std::shared_ptr<PlanEntry> hold;
  ContextPool* pool = nullptr;
  const Plan* plan = ReportedPlan(&hold, &pool);
  os << "{\"symbol\": " << JsonQuote(graph_.symbol)
     << ", \"initialized\": " << (init ? "true" : "false") << ", \"calls\": " << calls_.load()
     << ", \"dynamic\": " << (dynamic ? "true" : "false") << ", \"symbols\": [";
  for (size_t k = 0; k < graph_.symbols.size(); ++k) {
    os << (k ? ", " : "") << JsonQuote(graph_.symbols[k]);
  }
  os << "], \"plans_cached\": " << (dynamic ? plans_.size() : (plan != nullptr ? 1 : 0))
     << ", \"plan_cache_capacity\": " << PlanCacheCapacity()
     << ", \"plans_built\": " << (dynamic ? plans_.built() : static_builds_.load())
     << ", \"plan_evictions\": " << plans_.evictions()
     << ", \"last_plan_build_ms\": " << last_build_ms_.load()
     << ", \"weight_packs\": " << packs_.packs()
     << ", \"weight_pack_cache_entries\": " << packs_.size();
  if (hold) {
    os << ", \"plan_symbol_values\": {";
    for (size_t k = 0; k < graph_.symbols.size(); ++k) {
      os << (k ? ", " : "") << JsonQuote(graph_.symbols[k]) << ": " << hold->key[k];
    }
    os << '}';
  }
  if (plan != nullptr) {
    os << ", \"steps_per_call\": " << plan->steps.size()
       << ", \"primitives_per_call\": " << plan->steps.size() - plan->reorders.size()
       << ", \"reorders_per_call\": " << plan->reorders.size() << ", \"reorders\": [";
    for (size_t i = 0; i < plan->reorders.size(); ++i) {
      const ReorderRecord& r = plan->reorders[i];
      if (i) os << ", ";
      os << "{\"step\": " << r.step << ", \"before_node\": " << r.before_node
         << ", \"output_index\": " << r.output_index << ", \"value\": " << JsonQuote(r.value)
         << ", \"reason\": " << JsonQuote(r.reason)
         << ", \"src_format\": " << JsonQuote(r.src_format)
         << ", \"dst_format\": " << JsonQuote(r.dst_format) << '}';
    }
    size_t slot_bytes = 0;
    for (size_t s : plan->slot_sizes) slot_bytes += s;
    os << "], \"init_reorders\": " << plan->init_reorders
       << ", \"packs_reused\": " << plan->packs_reused
       << ", \"contexts_created\": " << pool->created()
       << ", \"contexts_free\": " << pool->free_count()
       << ", \"num_slots\": " << plan->slot_sizes.size()
       << ", \"slot_bytes\": " << slot_bytes
       << ", \"scratchpad_bytes\": " << plan->scratchpad_bytes;
  }
  os << '}';
  return os.str();
}

ffi::Bytes OneDNNJSONModule::SaveToBytes() const {
  std::string out(kBytesMagic, sizeof(kBytesMagic));
  auto put = [&out](uint64_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  };
  put(kBytesFormatVersion, 4);
  put(json_.size(), 8);
  out += json_;
  return ffi::Bytes(out);
}

ffi::Module OneDNNJSONModule::LoadFromBytes(const ffi::Bytes& bytes) {
  const char* p = bytes.data();
  size_t n = bytes.size();
  const char* who = "onednn_json: cannot load module from bytes: ";
  constexpr size_t kHeader = sizeof(kBytesMagic) + 4 + 8;
  if (n < kHeader) {
    TVM_FFI_THROW(ValueError) << who << "truncated header (" << n << " bytes, need at least "
                              << kHeader << ")";
  }
  if (std::memcmp(p, kBytesMagic, sizeof(kBytesMagic)) != 0) {
    TVM_FFI_THROW(ValueError) << who << "bad magic (not an onednn_json module)";
  }
  auto get = [p](size_t off, int bytes) {
    uint64_t v = 0;
    for (int i = 0; i < bytes; ++i) v |= static_cast<uint64_t>(static_cast<uint8_t>(p[off + i])) << (8 * i);
    return v;
  };
  uint64_t version = get(sizeof(kBytesMagic), 4);
  if (version != kBytesFormatVersion) {
    TVM_FFI_THROW(ValueError) << who << "unsupported serialization version " << version
                              << " (this runtime reads version " << kBytesFormatVersion << ")";
  }
  uint64_t len = get(sizeof(kBytesMagic) + 4, 8);
  if (len != n - kHeader) {
    TVM_FFI_THROW(ValueError) << who << "payload length " << len << " does not match the "
                              << n - kHeader << " bytes present (truncated or corrupt)";
  }
  return Create(std::string(p + kHeader, len));
}

}  // namespace tvm_onednn
