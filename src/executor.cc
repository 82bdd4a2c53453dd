/*!
 * \file executor.cc
 * \brief Execution contexts: binding buffers to memory objects and running the plan.
 */
#include "executor.h"

#include <omp.h>
#include <pthread.h>

#include <algorithm>
#include <cmath>

#include "int8_attrs.h"

namespace tvm_onednn {

namespace {
std::atomic<int> g_num_threads{0};
std::atomic<bool> g_openmp_used{false};
std::atomic<int> g_fork_generation{0};

/*! \brief Every NaN of x[0, count) becomes 0: SIMD compares and masked stores (compiled for
 *         AVX-512, AVX2 and baseline x86-64, picked at load time), one thread's chunk. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
void NanToZeroChunk(float* x, int64_t count) {
#pragma omp simd
  for (int64_t i = 0; i < count; ++i) {
    float v = x[i];
    if (v != v) x[i] = 0.f;
  }
}

void NanToZero(float* x, int64_t count) {
#pragma omp parallel if (count > 16384)
  {
    int t = omp_get_thread_num(), nt = omp_get_num_threads();
    int64_t per = ((count + nt - 1) / nt + 15) / 16 * 16;  // whole cache lines per thread
    int64_t begin = std::min(count, t * per), end = std::min(count, begin + per);
    NanToZeroChunk(x + begin, end - begin);
  }
}

/*! \brief dst (plain, `dims`) = src read with element `strides` (0 where it broadcasts). */
void BroadcastCopy(const float* src, float* dst, const std::vector<int64_t>& dims,
                   const std::vector<int64_t>& strides) {
  int64_t rank = static_cast<int64_t>(dims.size());
  int64_t inner = dims.back(), inner_stride = strides.back();
  int64_t rows = 1;
  for (int64_t d = 0; d + 1 < rank; ++d) rows *= dims[d];
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    int64_t off = 0, rem = r;
    for (int64_t d = rank - 2; d >= 0; --d) {
      off += (rem % dims[d]) * strides[d];
      rem /= dims[d];
    }
    float* out = dst + r * inner;
    for (int64_t i = 0; i < inner; ++i) out[i] = src[off + i * inner_stride];
  }
}

void RunHostStep(const Step& step, const std::vector<dnnl::memory>& mems) {
  switch (step.host) {
    case HostOp::kNanToZero:
      NanToZero(static_cast<float*>(mems[0].get_data_handle()),
                static_cast<int64_t>(mems[0].get_desc().get_size() / sizeof(float)));
      return;
    case HostOp::kBroadcastCopy:
      BroadcastCopy(static_cast<const float*>(mems[0].get_data_handle()),
                    static_cast<float*>(mems[1].get_data_handle()), step.host_dims,
                    step.host_strides);
      return;
    case HostOp::kDynamicQuantize: {
      DType dtype = step.host_dims[0] == 1 ? DType::kUInt8 : DType::kInt8;
      const MemDesc& md = mems[0].get_desc();
      int64_t count = static_cast<int64_t>(md.get_size() / sizeof(float));
      if (!DynamicQuantize(static_cast<const float*>(mems[0].get_data_handle()), count, dtype,
                           mems[1].get_data_handle(),
                           static_cast<float*>(mems[2].get_data_handle()),
                           static_cast<int32_t*>(mems[3].get_data_handle()))) {
        TVM_FFI_THROW(ValueError) << step.host_label
                                  << ": a holds a NaN or an infinity: it cannot be quantized "
                                     "(quant.src_scale is \"dynamic\")";
      }
      return;
    }
    case HostOp::kAttention: {
      const AttentionShape& shape = *step.attention;
      AttentionData data;
      size_t i = 0;
      data.q = static_cast<const float*>(mems[i++].get_data_handle());
      data.k = static_cast<const float*>(mems[i++].get_data_handle());
      data.v = static_cast<const float*>(mems[i++].get_data_handle());
      if (shape.has_mask) data.mask = static_cast<const float*>(mems[i++].get_data_handle());
      data.out = static_cast<float*>(mems[i++].get_data_handle());
      RunAttention(shape, data, mems[i].get_data_handle(), static_cast<int>(step.host_dims[0]));
      return;
    }
    case HostOp::kNone:
      return;
  }
}

void OnForkChild() {
  g_fork_generation.fetch_add(1);
  if (g_openmp_used.load()) SetNumThreads(1);
}

const int g_fork_handler = pthread_atfork(nullptr, nullptr, OnForkChild);
}  // namespace

void NoteOpenMPUse() { g_openmp_used.store(true, std::memory_order_relaxed); }

int ForkGeneration() {
  (void)g_fork_handler;
  return g_fork_generation.load(std::memory_order_acquire);
}

void SetNumThreads(int n) {
  if (n < 0) TVM_FFI_THROW(ValueError) << "onednn.set_num_threads: n must be >= 0, got " << n;
  g_num_threads.store(n);
  if (n > 0) omp_set_num_threads(n);
}

int GetNumThreads() {
  int n = g_num_threads.load();
  return n > 0 ? n : omp_get_max_threads();
}

ExecContext::ExecContext(const Plan& plan) : stream_(CpuEngine()) {
  slots_.reserve(plan.slot_sizes.size());
  for (size_t bytes : plan.slot_sizes) slots_.emplace_back(bytes);
  if (plan.scratchpad_bytes > 0) scratch_ = AlignedBuffer(plan.scratchpad_bytes);
  mems_.resize(plan.steps.size());
  c_args_.resize(plan.steps.size());
  for (size_t s = 0; s < plan.steps.size(); ++s) {
    for (const ArgBinding& b : plan.steps[s].args) {
      void* ptr = nullptr;
      switch (b.buf.kind) {
        case BufKind::kSlot:
          ptr = slots_[b.buf.index].data();
          break;
        case BufKind::kConst:
          ptr = plan.const_ptrs[b.buf.index];
          break;
        case BufKind::kScratch:
          ptr = scratch_.data();
          break;
        case BufKind::kInput:
        case BufKind::kOutput:
          ptr = nullptr;
          break;
      }
      dnnl::memory mem(b.md, CpuEngine(), ptr);
      if (b.buf.kind == BufKind::kInput || b.buf.kind == BufKind::kOutput) {
        user_mems_.push_back({mem, b.buf.kind == BufKind::kOutput, b.buf.index});
      }
      mems_[s].push_back(mem);
      c_args_[s].push_back({b.arg, mem.get()});
    }
  }
}

void ExecContext::Run(const Plan& plan, void* const* inputs, void* const* outputs) {
  int nt = g_num_threads.load(std::memory_order_relaxed);
  // omp_set_num_threads is per calling thread: apply the global setting on every thread.
  if (nt > 0 && omp_get_max_threads() != nt) omp_set_num_threads(nt);
  for (UserMem& um : user_mems_) {
    um.mem.set_data_handle(um.is_output ? outputs[um.index] : inputs[um.index]);
  }
  for (size_t s = 0; s < plan.steps.size(); ++s) {
    if (plan.steps[s].host != HostOp::kNone) {
      stream_.wait();  // primitives before it have written its operands
      RunHostStep(plan.steps[s], mems_[s]);
      continue;
    }
    const std::vector<dnnl_exec_arg_t>& a = c_args_[s];
    dnnl::error::wrap_c_api(dnnl_primitive_execute(plan.steps[s].prim.get(), stream_.get(),
                                                   static_cast<int>(a.size()), a.data()),
                            "could not execute a primitive");
  }
  stream_.wait();
}

ContextPool::Lease ContextPool::Acquire() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!free_.empty()) {
      std::unique_ptr<ExecContext> ctx = std::move(free_.back());
      free_.pop_back();
      return Lease(this, std::move(ctx));
    }
  }
  auto ctx = std::make_unique<ExecContext>(*plan_);
  created_++;
  return Lease(this, std::move(ctx));
}

void ContextPool::Release(std::unique_ptr<ExecContext> ctx) {
  if (!ctx) return;
  std::lock_guard<std::mutex> lock(mu_);
  free_.push_back(std::move(ctx));
}

int ContextPool::free_count() {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int>(free_.size());
}

}  // namespace tvm_onednn
