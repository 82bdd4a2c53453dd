/*!
 * \file executor.h
 * \brief Per-call execution contexts and their pool.
 *
 * A context owns everything a call mutates: the stream, the intermediate buffers (one per plan
 * slot), the scratchpad and the oneDNN memory objects bound to them. Primitives and packed
 * constants live in the Plan and are shared. Concurrent calls each take a free context from
 * the pool (creating one if none is free), so steady state allocates nothing.
 */
#ifndef TVM_ONEDNN_EXECUTOR_H_
#define TVM_ONEDNN_EXECUTOR_H_

#include <atomic>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "plan.h"

namespace tvm_onednn {

class ExecContext {
 public:
  explicit ExecContext(const Plan& plan);
  /*!
   * \brief Bind the call's buffers and run all steps.
   * \param inputs data pointers of the region inputs.
   * \param outputs data pointers of the region outputs.
   */
  void Run(const Plan& plan, void* const* inputs, void* const* outputs);

 private:
  dnnl::stream stream_;
  std::vector<AlignedBuffer> slots_;
  AlignedBuffer scratch_;
  std::vector<std::vector<dnnl::memory>> mems_;        // keeps the memory objects alive
  std::vector<std::vector<dnnl_exec_arg_t>> c_args_;   // prebuilt: no allocation per call
  struct UserMem {
    dnnl::memory mem;
    bool is_output;
    int index;
  };
  // memory objects whose handle is a user buffer, re-bound on every call
  std::vector<UserMem> user_mems_;
};

class ContextPool {
 public:
  explicit ContextPool(const Plan* plan) : plan_(plan) {}

  /*! \brief RAII lease of one context. */
  class Lease {
   public:
    Lease(ContextPool* pool, std::unique_ptr<ExecContext> ctx)
        : pool_(pool), ctx_(std::move(ctx)) {}
    ~Lease() { pool_->Release(std::move(ctx_)); }
    ExecContext* operator->() { return ctx_.get(); }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;

   private:
    ContextPool* pool_;
    std::unique_ptr<ExecContext> ctx_;
  };

  Lease Acquire();
  int created() const { return created_.load(); }
  int free_count();

 private:
  void Release(std::unique_ptr<ExecContext> ctx);

  const Plan* plan_;
  std::mutex mu_;
  std::vector<std::unique_ptr<ExecContext>> free_;
  std::atomic<int> created_{0};
};

/*! \brief Global thread count for oneDNN calls (0 = OpenMP default). */
void SetNumThreads(int n);
int GetNumThreads();

/*!
 * \brief Fork safety. GNU OpenMP cannot start threads in a child forked after the parent
 * ran a parallel region: the child's first multi-threaded oneDNN call would wait forever in
 * a barrier. A fork handler counts the forks this process descends from and, if the parent
 * had used OpenMP, runs the child's oneDNN calls on one thread; modules rebuild their
 * primitives (made for the parent's threads) when the count changes.
 */
void NoteOpenMPUse();
int ForkGeneration();

}  // namespace tvm_onednn

#endif  // TVM_ONEDNN_EXECUTOR_H_
