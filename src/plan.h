/*!
 * \file plan.h
 * \brief The execution plan of one region: primitives in order, each argument bound to a buffer
 *        (reusable slot, user input/output, packed constant, scratchpad), plus the records
 *        behind get_kernel_info / get_stats. Built once at init; shared read-only by all
 *        execution contexts.
 */
#ifndef TVM_ONEDNN_PLAN_H_
#define TVM_ONEDNN_PLAN_H_

#include <tvm/ffi/container/tensor.h>

#include <memory>
#include <string>
#include <vector>

#include "attention.h"
#include "graph.h"
#include "memory.h"
#include "pack_cache.h"

namespace tvm_onednn {

enum class BufKind : uint8_t {
  kSlot,     // per-context intermediate buffer `index`
  kInput,    // user input `index` (bound per call)
  kOutput,   // user output `index` (bound per call)
  kConst,    // module-owned constant data `index` (Plan::const_ptrs)
  kScratch,  // per-context scratchpad
};

struct BufRef {
  BufKind kind = BufKind::kSlot;
  int index = -1;
};

struct ArgBinding {
  int arg;  // DNNL_ARG_*
  BufRef buf;
  MemDesc md;
};

/*!
 * \brief Work done by the runtime itself, for what no oneDNN primitive does exactly:
 *  - kNanToZero: args[0] (f32, plain) gets every NaN replaced by 0 (softmax nan_to_zero);
 *  - kBroadcastCopy: args[1] (plain, dims `host_dims`) = args[0] read with element strides
 *    `host_strides` (0 along broadcast dims): a src0 that oneDNN's binary cannot broadcast.
 *  - kDynamicQuantize: args[2] (f32 [1]) / args[3] (s32 [1]) = the scale / zero point of this
 *    call's range of args[0] (f32, plain), and args[1] (plain) = args[0] quantized with them, to
 *    u8 (host_dims[0] == 1) or s8 (int8_attrs.h, DynamicQuantize); a NaN or infinity is an
 *    error naming `host_label`.
 *  - kAttention: args q, k, v, [mask,] out, scratch = the fused attention of `attention`
 *    (attention.h) on up to host_dims[0] threads.
 */
enum class HostOp : uint8_t { kNone, kNanToZero, kBroadcastCopy, kDynamicQuantize, kAttention };

struct Step {
  dnnl::primitive prim;  // empty for host steps
  std::vector<ArgBinding> args;
  bool is_reorder = false;
  int node = -1;  // node index (for reorders: the consuming node, -1 for region outputs)
  HostOp host = HostOp::kNone;
  std::vector<int64_t> host_dims, host_strides;
  std::string host_label;  // "symbol: node i (op)" for a host step's errors
  std::shared_ptr<const AttentionShape> attention;  // kAttention only
};

/*! \brief One reorder executed on every call (for get_stats). */
struct ReorderRecord {
  int step = 0;
  int before_node = -1;   // consuming node or -1
  int output_index = -1;  // region output written by this reorder, or -1
  std::string value;      // "input 0", "node 3 (...)"
  std::string reason;
  std::string src_format, dst_format;
};

/*! \brief Per-node record (for get_kernel_info). */
struct NodeRecord {
  std::string op, impl, src_format, weights_format, dst_format, residual;
  std::string src_dtype, dst_dtype;          // oneDNN data types of the primitive's src / dst
  std::string weights_rounding = "none";     // int8: "none", "onednn_halved", "runtime_halved"
  bool direct_output = false;
  int step = -1;
};

struct Plan {
  std::vector<Step> steps;
  std::vector<size_t> slot_sizes;
  size_t scratchpad_bytes = 0;
  std::vector<void*> const_ptrs;
  std::vector<std::shared_ptr<AlignedBuffer>> owned;
  std::vector<tvm::ffi::Tensor> held;
  std::vector<NodeRecord> nodes;
  std::vector<ReorderRecord> reorders;
  int init_reorders = 0;  // constant reorders (weight packing) executed while building
  int packs_reused = 0;   // packed constants taken from the module's PackCache instead
};

/*!
 * \brief Build the plan: choose layouts, create primitives, pack constants (reorders executed
 *        now, once), plan intermediate buffers.
 * \param g a concrete graph (no symbols).
 * \param consts the constants in graph order, already validated against the graph.
 * \param packs where packed constants are looked up and stored (shared by a module's plans);
 *        nullptr packs into buffers owned by this plan alone.
 */
std::unique_ptr<Plan> BuildPlan(const Graph& g, const std::vector<tvm::ffi::Tensor>& consts,
                                PackCache* packs = nullptr);

}  // namespace tvm_onednn

#endif  // TVM_ONEDNN_PLAN_H_
