/*!
 * \file plan.cc
 * \brief Layout choice, reorder placement, in-place residual fusion and buffer planning.
 *
 * Rules (docs/runtime.md has the long form):
 *  - conv src/weights/dst use format_tag::any; if the producer's layout differs from the chosen
 *    src layout, the conv is re-queried with the producer's layout and kept when oneDNN picks the
 *    same implementation (no reorder); otherwise one reorder is planned before the conv.
 *  - constants are reordered (packed) once here, never per call.
 *  - pools consume their producer's layout as is.
 *  - matmul runs on its operands' own layouts (plain, or the strided / permuted views of
 *    reshape / transpose nodes) when oneDNN has a non-reference kernel for them, else on plain
 *    copies; constant b (or a transpose of one) is packed with format_tag::any.
 *  - reshape / transpose run nothing: their value is a view of the data's buffer (slots count
 *    their viewers, so a buffer lives until its last view dies and is never summed into while
 *    viewed).
 *  - layer_norm / softmax / eltwise / binary read and write plain data; softmax's nan_to_zero
 *    and a binary's non-broadcastable src0 are host steps (plan.h, HostOp).
 *  - a node whose value is only a region output writes the user's buffer directly when its
 *    dst layout is (or can be, with the same implementation) plain; otherwise a reorder copies.
 *  - `_add`: sum post-op in place into the residual's buffer when that value is an internal
 *    intermediate that dies at this node and has the dst layout; otherwise binary_add.
 *  - int8 (int8_attrs.h): scales are constant memories bound once; quantize / dequantize are
 *    reorders that write the layout their first consumer prefers (so a quantize feeding an int8
 *    conv writes its nhwc u8 directly); int8 weights may be halved once at init (saturation
 *    guard).
 */
#include "plan.h"

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>

#include "executor.h"
#include "primitives.h"

namespace tvm_onednn {

namespace {

using tag = dnnl::memory::format_tag;

/*! \brief How much a matmul implementation is preferred: brgemm 2, other optimized 1, ref 0. */
int MatmulImplRank(const std::string& impl) {
  if (IsReferenceImpl(impl)) return 0;
  return impl.rfind("brg", 0) == 0 ? 2 : 1;
}

struct ValueState {
  MemDesc md;  // layout of the value (logical dims)
  BufRef buf;
  bool transferred = false;  // buffer handed to another value (in-place sum)
  std::vector<std::pair<MemDesc, BufRef>> alts;
  int last_use = -1;       // last node reading it; INT_MAX if it is a region output
  int last_node_use = -1;  // last node reading it
  int node_uses = 0;
  bool is_output = false;
  int direct_output = -1;  // output index this value may be written into directly
  bool fused = false;      // computed inside a fused step: never stored
};

class Planner {
 public:
  Planner(const Graph& g, const std::vector<tvm::ffi::Tensor>& consts, PackCache* packs)
      : g_(g), consts_(consts), packs_(packs), plan_(new Plan()), init_stream_(CpuEngine()) {}

  std::unique_ptr<Plan> Build() {
    InitValues();
    FindAttentionChains();
    for (int n = 0; n < static_cast<int>(g_.nodes.size()); ++n) {
      if (fused_into_.count(n)) {
        RecordFused(n);
      } else if (attention_.count(n)) {
        PlanAttention(n);
      } else {
        PlanNode(n);
      }
      ReleaseDead(n);
      for (int slot : release_after_[n]) slots_.Release(slot);
    }
    PlanOutputs();
    plan_->slot_sizes = slots_.sizes();
    init_stream_.wait();
    return std::move(plan_);
  }

 private:
  void PlanNode(int n) {
    const Node& node = g_.nodes[n];
    switch (node.spec->base) {
      case BaseOp::kConv2d:
        PlanConv(n);
        break;
      case BaseOp::kMatmul:
        if (node.quant.dynamic_src) {
          PlanDynamicQMatmul(n);
        } else {
          PlanMatmul(n);
        }
        break;
      case BaseOp::kQuantize:
      case BaseOp::kDequantize:
        PlanQuantReorder(n);
        break;
      case BaseOp::kLayerNorm:
        PlanLayerNorm(n);
        break;
      case BaseOp::kSoftmax:
      case BaseOp::kEltwise:
        PlanSoftmaxOrEltwise(n);
        break;
      case BaseOp::kBinary:
        PlanBinary(n);
        break;
      case BaseOp::kReshape:
      case BaseOp::kTranspose:
        PlanView(n);
        break;
      default:
        PlanPool(n);
        break;
    }
  }

  [[noreturn]] void Fail(int node, const std::string& msg) {
    TVM_FFI_THROW(RuntimeError) << g_.symbol << ": node " << node << " (" << g_.nodes[node].op
                                << "): " << msg;
    TVM_FFI_UNREACHABLE();
  }

  std::string Where(int vid) const {
    ValueRef r;
    int ni = static_cast<int>(g_.inputs.size()), nc = static_cast<int>(g_.constants.size());
    if (vid < ni) {
      r = {RefKind::kInput, vid};
    } else if (vid < ni + nc) {
      r = {RefKind::kConst, vid - ni};
    } else {
      r = {RefKind::kNode, vid - ni - nc};
    }
    return g_.RefStr(r);
  }

  void InitValues() {
    vals_.resize(g_.NumValues());
    for (size_t i = 0; i < g_.inputs.size(); ++i) {
      ValueState& v = vals_[g_.ValueId({RefKind::kInput, static_cast<int64_t>(i)})];
      v.md = PlainDesc(g_.inputs[i].shape, g_.inputs[i].dtype);
      v.buf = {BufKind::kInput, static_cast<int>(i)};
    }
    for (size_t i = 0; i < g_.constants.size(); ++i) {
      ValueState& v = vals_[g_.ValueId({RefKind::kConst, static_cast<int64_t>(i)})];
      v.md = PlainDesc(g_.constants[i].shape, g_.constants[i].dtype);
      const DLTensor* t = consts_[i].GetDLTensorPtr();
      v.buf = AddConst(static_cast<char*>(t->data) + t->byte_offset);
      plan_->held.push_back(consts_[i]);
    }
    for (size_t n = 0; n < g_.nodes.size(); ++n) {
      for (const ValueRef& r : g_.nodes[n].inputs) {
        ValueState& v = vals_[g_.ValueId(r)];
        v.last_use = std::max(v.last_use, static_cast<int>(n));
        v.last_node_use = v.last_use;
        v.node_uses++;
      }
    }
    for (size_t j = 0; j < g_.outputs.size(); ++j) {
      ValueState& v = vals_[g_.ValueId(g_.outputs[j])];
      v.is_output = true;
      v.last_use = INT_MAX;
      if (g_.outputs[j].kind == RefKind::kNode && v.direct_output < 0) {
        v.direct_output = static_cast<int>(j);
      }
    }
    // A region output that is a reshape of a node read by nothing else: that node writes the
    // user's buffer (a plain value reshaped is plain), so the output needs no copy.
    for (size_t j = 0; j < g_.outputs.size(); ++j) {
      const ValueRef& out = g_.outputs[j];
      if (out.kind != RefKind::kNode) continue;
      const Node& node = g_.nodes[out.index];
      if (node.spec->base != BaseOp::kReshape || node.inputs[0].kind != RefKind::kNode) continue;
      ValueState& data = vals_[g_.ValueId(node.inputs[0])];
      if (vals_[g_.ValueId(out)].direct_output == static_cast<int>(j) && !data.is_output &&
          data.node_uses == 1 && data.direct_output < 0) {
        data.direct_output = static_cast<int>(j);
      }
    }
  }

  BufRef AddConst(void* ptr) {
    plan_->const_ptrs.push_back(ptr);
    return {BufKind::kConst, static_cast<int>(plan_->const_ptrs.size() - 1)};
  }

  BufRef AddOwnedConst(size_t bytes) {
    auto buf = std::make_shared<AlignedBuffer>(bytes);
    plan_->owned.push_back(buf);
    return AddConst(buf->data());
  }

  static int CountUses(const Node& node, const ValueRef& r) {
    return static_cast<int>(std::count(node.inputs.begin(), node.inputs.end(), r));
  }

  void AddReorderStep(BufRef src, const MemDesc& src_md, BufRef dst, const MemDesc& dst_md,
                      int before_node, int output_index, const std::string& value,
                      const std::string& reason) {
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    dnnl::reorder::primitive_desc pd;
    try {
      pd = dnnl::reorder::primitive_desc(CpuEngine(), src_md, CpuEngine(), dst_md, attr);
    } catch (const dnnl::error& e) {
      TVM_FFI_THROW(RuntimeError) << g_.symbol << ": cannot create reorder " << FormatStr(src_md)
                                  << " -> " << FormatStr(dst_md) << " for " << value << ": "
                                  << e.what();
    }
    Step step;
    step.prim = dnnl::reorder(pd);
    step.is_reorder = true;
    step.node = before_node;
    step.args.push_back({DNNL_ARG_FROM, src, src_md});
    step.args.push_back({DNNL_ARG_TO, dst, dst_md});
    AddScratchpad(pd, &step);
    ReorderRecord rec;
    rec.step = static_cast<int>(plan_->steps.size());
    rec.before_node = before_node;
    rec.output_index = output_index;
    rec.value = value;
    rec.reason = reason;
    rec.src_format = FormatStr(src_md);
    rec.dst_format = FormatStr(dst_md);
    plan_->reorders.push_back(rec);
    plan_->steps.push_back(std::move(step));
  }

  void AddScratchpad(const dnnl::primitive_desc_base& pd, Step* step) {
    MemDesc sp = pd.scratchpad_desc();
    if (sp && sp.get_size() > 0) {
      plan_->scratchpad_bytes = std::max(plan_->scratchpad_bytes, sp.get_size());
      step->args.push_back({DNNL_ARG_SCRATCHPAD, {BufKind::kScratch, 0}, sp});
    }
  }

  /*!
   * \brief Make value `vid` available in layout `want` (whose dims may be a reshaped view of the
   *        value's logical dims). Reuses the value's buffer when the layouts match physically,
   *        else a cached reordered copy, else plans a reorder (constants: executed now, once).
   */
  BufRef Operand(int vid, const MemDesc& want, int node, const std::string& role) {
    ValueState& v = vals_[vid];
    Dims want_dims = want.get_dims();
    std::optional<MemDesc> view = TryReshape(v.md, want_dims);
    if (view && SameLayout(*view, want)) return v.buf;
    for (const auto& alt : v.alts) {
      std::optional<MemDesc> aview = TryReshape(alt.first, want_dims);
      if (aview && SameLayout(*aview, want)) return alt.second;
    }
    BufRef src_buf = v.buf;
    MemDesc src_md;
    if (view) {
      src_md = *view;
    } else {
      // The value's layout cannot be viewed with these dims: go through plain.
      MemDesc plain = PlainLike(v.md);
      src_buf = Operand(vid, plain, node, role);
      src_md = *TryReshape(plain, want_dims);
      if (SameLayout(src_md, want)) return src_buf;  // plain was what it takes
    }
    BufRef dst;
    bool is_const = v.buf.kind == BufKind::kConst;
    if (is_const) {
      void* src = plan_->const_ptrs[src_buf.index];
      auto pack = [&](void* packed) { ReorderNow(src_md, src, want, packed); };
      int index = vid - static_cast<int>(g_.inputs.size());
      if (index < static_cast<int>(g_.constants.size())) {
        dst = PackConst(index, false, want, pack);
      } else {  // a view (reshape / transpose node) of a constant: packed for this plan only
        dst = AddOwnedConst(want.get_size());
        pack(plan_->const_ptrs[dst.index]);
      }
    } else {
      dst = {BufKind::kSlot, slots_.Alloc(want.get_size())};
      AddReorderStep(src_buf, src_md, dst, want, node, -1, Where(vid),
                     role + " layout " + FormatStr(src_md) + " -> " + FormatStr(want));
    }
    v.alts.push_back({want, dst});
    return dst;
  }

  /*!
   * \brief Constant `index` packed into `want` (`halved`: int8 weights halved) by `pack`, now
   *        (once, at build), or taken from the module's PackCache when another plan packed it.
   */
  BufRef PackConst(int index, bool halved, const MemDesc& want,
                   const std::function<void(void*)>& pack) {
    std::shared_ptr<AlignedBuffer> buf;
    if (packs_ != nullptr) {
      bool packed = false;
      buf = packs_->Get(index, want, halved, [&](void* dst) {
        pack(dst);
        packed = true;
      });
      if (!packed) plan_->packs_reused++;
    } else {
      buf = std::make_shared<AlignedBuffer>(want.get_size());
      pack(buf->data());
    }
    plan_->owned.push_back(buf);
    return AddConst(buf->data());
  }

  /*! \brief Reorder constant data `src` (layout `src_md`) into `dst` (layout `dst_md`) now. */
  void ReorderNow(const MemDesc& src_md, void* src, const MemDesc& dst_md, void* dst) {
    dnnl::memory src_mem(src_md, CpuEngine(), src);
    dnnl::memory dst_mem(dst_md, CpuEngine(), dst);
    dnnl::reorder(src_mem, dst_mem).execute(init_stream_, src_mem, dst_mem);
    init_stream_.wait();
    plan_->init_reorders++;
  }

  /*! \brief Bind the node's int8 scales and zero points (constant memories, built once). */
  void BindScales(int n, float weight_factor, std::vector<ArgBinding>* args) {
    for (const auto& sa : ScaleArgs(g_.nodes[n], weight_factor)) {
      BufRef buf = AddOwnedConst(sa.second.size() * sizeof(float));
      std::memcpy(plan_->const_ptrs[buf.index], sa.second.data(), sa.second.size() * sizeof(float));
      MemDesc md({static_cast<int64_t>(sa.second.size())}, dnnl::memory::data_type::f32, tag::a);
      args->push_back({sa.first, buf, md});
    }
    for (const auto& zp : ZeroPointArgs(g_.nodes[n])) {
      BufRef buf = AddOwnedConst(sizeof(int32_t));
      std::memcpy(plan_->const_ptrs[buf.index], &zp.second, sizeof(int32_t));
      MemDesc md({1}, dnnl::memory::data_type::s32, tag::a);
      args->push_back({zp.first, buf, md});
    }
  }

  /*!
   * \brief Bind what conv and matmul node n share after its source: weights (`weight_role` in
   *        errors; int8 ones through QuantWeights), bias, a binary-add residual and the int8
   *        scales. Returns how the weights are rounded.
   */
  template <typename PrimitiveDesc>
  WeightRounding BindWeightsAndPostOps(int n, const PrimitiveDesc& pd, const PostOps& post,
                                       const char* weight_role, std::vector<ArgBinding>* args) {
    const Node& node = g_.nodes[n];
    const OpSpec& spec = *node.spec;
    WeightRounding rounding = WeightRounding::kNone;
    BufRef weights = spec.quantized
                         ? QuantWeights(n, pd.weights_desc(), ImplName(pd), &rounding)
                         : Operand(g_.ValueId(node.inputs[1]), pd.weights_desc(), n, weight_role);
    args->push_back({DNNL_ARG_WEIGHTS, weights, pd.weights_desc()});
    if (spec.has_bias && post.bias_md) {  // a matmul bias after its output scale
      BufRef bias = Operand(g_.ValueId(node.inputs[spec.BiasIndex()]), *post.bias_md, n, "bias");
      args->push_back({DNNL_ARG_ATTR_MULTIPLE_POST_OP(post.BiasPostOpIndex()) | DNNL_ARG_SRC_1,
                       bias, *post.bias_md});
    } else if (spec.has_bias) {
      BufRef bias = Operand(g_.ValueId(node.inputs[spec.BiasIndex()]), pd.bias_desc(), n, "bias");
      args->push_back({DNNL_ARG_BIAS, bias, pd.bias_desc()});
    }
    if (post.residual == ResidualMode::kBinary) {
      const ValueRef& r = node.inputs[spec.ResidualIndex()];
      BufRef residual = Operand(g_.ValueId(r), post.residual_md, n, "residual");
      args->push_back({DNNL_ARG_ATTR_MULTIPLE_POST_OP(post.ResidualPostOpIndex()) | DNNL_ARG_SRC_1,
                       residual, post.residual_md});
    }
    BindScales(n, rounding == WeightRounding::kRuntimeHalved ? 2.f : 1.f, args);
    return rounding;
  }

  /*!
   * \brief The packed int8 weights of conv/matmul node n in layout `want`; halved once here
   *        when the saturation guard asks for it (int8_attrs.h).
   */
  BufRef QuantWeights(int n, const MemDesc& want, const std::string& impl,
                      WeightRounding* rounding) {
    const Node& node = g_.nodes[n];
    int w_vid = g_.ValueId(node.inputs[1]);
    const ValueState& v = vals_[w_vid];
    const std::vector<int64_t>& wshape = g_.Info(node.inputs[1]).shape;
    size_t count = static_cast<size_t>(NumElements(wshape));
    const int8_t* data = static_cast<const int8_t*>(plan_->const_ptrs[v.buf.index]);
    bool is_conv = node.spec->base == BaseOp::kConv2d;
    int max_pair_sum = MaxPairSum(data, wshape, is_conv ? 1 : wshape.size() - 2);
    *rounding = ChooseWeightRounding(node, QuantSrcDType(g_, node), impl, max_pair_sum);
    if (*rounding != WeightRounding::kRuntimeHalved) return Operand(w_vid, want, n, "weight");
    std::optional<MemDesc> view = TryReshape(v.md, want.get_dims());
    if (!view) Fail(n, "cannot view the int8 weights with the primitive's dims");
    int index = w_vid - static_cast<int>(g_.inputs.size());
    return PackConst(index, true, want, [&](void* packed) {
      AlignedBuffer half(count);
      HalveInt8Weights(data, static_cast<int8_t*>(half.data()), count);
      ReorderNow(*view, half.data(), want, packed);
    });
  }

  /*!
   * \brief Layout the first node reading value `n` as its data operand would like, in dtype
   *        `dt`: a conv's preferred src layout, nhwc for int8 pools, plain for matmul.
   */
  std::optional<MemDesc> ConsumerLayout(int n, dnnl::memory::data_type dt) {
    for (size_t m = n + 1; m < g_.nodes.size(); ++m) {
      const Node& c = g_.nodes[m];
      if (c.inputs.empty() || !(c.inputs[0] == ValueRef{RefKind::kNode, n})) continue;
      NodeDims dims = GetNodeDims(g_, c);
      switch (c.spec->base) {
        case BaseOp::kConv2d: {
          MemDesc any_src(dims.src, dt, tag::any);
          MemDesc any_w(dims.weights, ToDnnl(g_.Info(c.inputs[1]).dtype), tag::any);
          MemDesc any_dst(dims.dst, ToDnnl(c.out.dtype), tag::any);
          PostOps probe;
          if (c.spec->has_add) probe.residual = ResidualMode::kSum;
          auto pd = MakeConvPd(c, dims, any_src, any_w, any_dst, probe);
          if (pd) return pd->src_desc();
          return std::nullopt;
        }
        case BaseOp::kMatmul:
          return PlainDesc(g_.nodes[n].out.shape, g_.nodes[n].out.dtype);
        case BaseOp::kMaxPool2d:
        case BaseOp::kAvgPool2d:
        case BaseOp::kGlobalAvgPool2d:
          if (c.spec->quantized) return MemDesc(dims.src, dt, tag::acdb);
          return std::nullopt;
        default:
          return std::nullopt;
      }
    }
    return std::nullopt;
  }

  void Release(int vid) {
    ValueState& v = vals_[vid];
    if (v.fused) return;
    if (v.buf.kind == BufKind::kSlot && !v.transferred) ReleaseSlot(v.buf.index);
    for (const auto& alt : v.alts) {
      if (alt.second.kind == BufKind::kSlot) ReleaseSlot(alt.second.index);  // may be viewed
    }
    v.alts.clear();
  }

  void ReleaseDead(int n) {
    const Node& node = g_.nodes[n];
    std::vector<int> done;
    std::vector<ValueRef> reads = node.inputs;
    auto chain = attention_.find(n);  // a fused step also reads the scores' operands
    if (chain != attention_.end()) {
      const std::vector<ValueRef>& more = g_.nodes[chain->second.scores].inputs;
      reads.insert(reads.end(), more.begin(), more.end());
    }
    for (const ValueRef& r : reads) {
      int vid = g_.ValueId(r);
      if (vals_[vid].last_use == n && std::find(done.begin(), done.end(), vid) == done.end()) {
        Release(vid);
        done.push_back(vid);
      }
    }
    int out = g_.ValueId({RefKind::kNode, n});
    if (vals_[out].last_use < 0 && !vals_[out].is_output) Release(out);
  }

  /*! \brief A slot viewed by one more value (reshape / transpose): released by the last one. */
  void AddAlias(int slot) {
    if (slot_aliases_.size() <= static_cast<size_t>(slot)) slot_aliases_.resize(slot + 1, 0);
    slot_aliases_[slot]++;
  }

  void ReleaseSlot(int slot) {
    if (static_cast<size_t>(slot) < slot_aliases_.size() && slot_aliases_[slot] > 0) {
      slot_aliases_[slot]--;
    } else {
      slots_.Release(slot);
    }
  }

  bool Aliased(const BufRef& buf) const {
    return buf.kind == BufKind::kSlot && static_cast<size_t>(buf.index) < slot_aliases_.size() &&
           slot_aliases_[buf.index] > 0;
  }

  /*! \brief Destination buffer of node n whose value has layout `md`. */
  BufRef DstBuffer(int n, const MemDesc& md, bool direct) {
    int vid = g_.ValueId({RefKind::kNode, n});
    if (direct) return {BufKind::kOutput, vals_[vid].direct_output};
    return {BufKind::kSlot, slots_.Alloc(md.get_size())};
  }

  bool OnlyOutput(int vid) const {
    const ValueState& v = vals_[vid];
    return v.is_output && v.node_uses == 0 && v.direct_output >= 0;
  }

  /*! \brief Whether `_add`'s residual can be accumulated in place (sum post-op). */
  bool CanSumInPlace(int n, const ValueRef& r, const MemDesc& dst_md) const {
    const ValueState& rv = vals_[g_.ValueId(r)];
    return r.kind == RefKind::kNode && rv.buf.kind == BufKind::kSlot && !rv.transferred &&
           !Aliased(rv.buf) && !rv.is_output && rv.last_use == n &&
           CountUses(g_.nodes[n], r) == 1 && SameElementLayout(rv.md, dst_md);
  }

  void FinishNode(int n, const dnnl::primitive_desc_base& pd, dnnl::primitive prim,
                  std::vector<ArgBinding> args, const MemDesc& value_md, BufRef dst,
                  bool direct, const std::string& residual, const MemDesc& src_md,
                  const MemDesc& weights_md, const MemDesc& dst_md,
                  WeightRounding rounding = WeightRounding::kNone) {
    int vid = g_.ValueId({RefKind::kNode, n});
    Step step;
    step.prim = std::move(prim);
    step.args = std::move(args);
    step.node = n;
    AddScratchpad(pd, &step);
    NodeRecord rec;
    rec.op = g_.nodes[n].op;
    rec.impl = ImplName(pd);
    rec.src_format = FormatStr(src_md);
    rec.weights_format = weights_md.get_ndims() > 0 ? FormatStr(weights_md) : "";
    rec.dst_format = FormatStr(dst_md);
    rec.residual = residual;
    rec.src_dtype = DataTypeName(src_md.get_data_type());
    rec.dst_dtype = DataTypeName(dst_md.get_data_type());
    rec.weights_rounding = WeightRoundingName(rounding);
    rec.direct_output = direct;
    rec.step = static_cast<int>(plan_->steps.size());
    plan_->nodes.push_back(rec);
    plan_->steps.push_back(std::move(step));
    vals_[vid].md = value_md;
    vals_[vid].buf = dst;
  }

  void PlanConv(int n) {
    const Node& node = g_.nodes[n];
    const OpSpec& spec = *node.spec;
    NodeDims dims = GetNodeDims(g_, node);
    using dt = dnnl::memory::data_type;
    dt dt_src = ToDnnl(g_.Info(node.inputs[0]).dtype);
    dt dt_w = ToDnnl(g_.Info(node.inputs[1]).dtype);
    dt dt_dst = ToDnnl(node.out.dtype);
    MemDesc any_src(dims.src, dt_src, tag::any), any_w(dims.weights, dt_w, tag::any),
        any_dst(dims.dst, dt_dst, tag::any);
    int data_vid = g_.ValueId(node.inputs[0]);
    int out_vid = g_.ValueId({RefKind::kNode, n});
    PostOps probe;
    if (spec.has_add) probe.residual = ResidualMode::kSum;

    auto pd0 = MakeConvPd(node, dims, any_src, any_w, any_dst, probe);
    if (!pd0) Fail(n, "oneDNN has no convolution implementation for these shapes");
    std::string impl0 = ImplName(*pd0);
    MemDesc src_md = pd0->src_desc();
    // Prefer the producer's layout when oneDNN runs the same kernel on it (no reorder).
    std::optional<MemDesc> producer = TryReshape(vals_[data_vid].md, dims.src);
    if (producer && !SameLayout(*producer, src_md)) {
      auto pdp = MakeConvPd(node, dims, *producer, any_w, any_dst, probe);
      if (pdp && ImplName(*pdp) == impl0) {
        src_md = *producer;
        pd0 = pdp;
      }
    }
    MemDesc dst_md = pd0->dst_desc();
    MemDesc plain_dst = PlainDesc(node.out.shape, node.out.dtype);
    bool direct = false;
    if (vals_[out_vid].direct_output >= 0) {
      if (SameLayout(dst_md, plain_dst)) {
        direct = true;
      } else if (OnlyOutput(out_vid)) {
        auto pdd = MakeConvPd(node, dims, src_md, any_w, plain_dst, probe);
        if (pdd && ImplName(*pdd) == impl0) {
          dst_md = plain_dst;
          direct = true;
        }
      }
    }
    PostOps post;
    std::string residual = "none";
    BufRef dst;
    bool have_dst = false;
    std::optional<dnnl::convolution_forward::primitive_desc> pd;
    if (spec.has_add) {
      const ValueRef& r = node.inputs[spec.ResidualIndex()];
      int r_vid = g_.ValueId(r);
      ValueState& rv = vals_[r_vid];
      dt r_dt = rv.md.get_data_type();
      float rs = ResidualScale(node);
      // A sum post-op reads the residual from dst's buffer: it needs dst's element size
      // (u8 <-> s8 via the sum's data type) and adds rs * stored value before the dst scale.
      auto sum_dt = [&](dt stored) { return stored == dt_dst ? dt::undef : stored; };
      bool same_size = DataTypeBytes(r_dt) == DataTypeBytes(dt_dst);
      if (!direct && same_size && CanSumInPlace(n, r, dst_md)) {
        // accumulate into the residual's own buffer
        post.residual = ResidualMode::kSum;
        post.residual_scale = rs;
        post.residual_zp = ResidualZeroPoint(node);
        post.sum_dt = sum_dt(r_dt);
        dst = rv.buf;
        have_dst = true;
        rv.transferred = true;
        residual = "sum_inplace";
      } else {
        PostOps bin;
        bin.residual = ResidualMode::kBinary;
        bin.residual_md = rv.md;
        bin.residual_scale = rs;
        bin.residual_zp = ResidualZeroPoint(node);
        auto pdb = MakeConvPd(node, dims, src_md, any_w, dst_md, bin);
        // A src1 layout other than dst's often pushes oneDNN off its fast kernel (to ref:any).
        if (pdb && (SameElementLayout(rv.md, dst_md) || ImplName(*pdb) == impl0)) {
          post = bin;
          pd = pdb;
          residual = "binary_add";
        } else {
          // The residual is needed in the dst layout: reorder it (or reuse such a copy). When
          // nothing reads the residual afterwards the copy becomes this node's dst (sum). The
          // copy keeps the residual's dtype, except that an int8 residual of a float32 dst is
          // converted to f32 (exact) so that it can be the dst.
          dt copy_dt = r_dt;
          if (!same_size && DataTypeBytes(r_dt) == 1 && dt_dst == dt::f32) copy_dt = dt::f32;
          std::optional<MemDesc> want = WithDataType(dst_md, copy_dt);
          if (!want) {
            if (!pdb) Fail(n, "oneDNN cannot add the residual in its layout");
            post = bin;
            pd = pdb;
            residual = "binary_add";
          } else {
            BufRef copy = Operand(r_vid, *want, n, "residual");
            bool private_copy = DataTypeBytes(copy_dt) == DataTypeBytes(dt_dst) &&
                                copy.kind == BufKind::kSlot && !Aliased(copy) && !direct &&
                                rv.last_node_use == n && CountUses(node, r) == 1 &&
                                !(rv.buf.kind == copy.kind && rv.buf.index == copy.index) &&
                                // oneDNN's sum has no zero point for an f32 summand
                                !(ResidualZeroPoint(node) != 0 && copy_dt == dt::f32);
            if (private_copy) {
              for (size_t k = 0; k < rv.alts.size(); ++k) {
                if (rv.alts[k].second.kind == copy.kind &&
                    rv.alts[k].second.index == copy.index) {
                  rv.alts.erase(rv.alts.begin() + k);
                  break;
                }
              }
              post.residual = ResidualMode::kSum;
              post.residual_scale = rs;
              post.residual_zp = ResidualZeroPoint(node);
              post.sum_dt = sum_dt(copy_dt);
              dst = copy;
              have_dst = true;
              residual = "sum_inplace_copy";
            } else {
              post = bin;
              post.residual_md = *want;
              residual = "binary_add";
            }
          }
        }
      }
    }
    if (!pd) pd = MakeConvPd(node, dims, src_md, any_w, dst_md, post);
    if (!pd) Fail(n, "oneDNN has no convolution implementation for the chosen layouts");
    std::vector<ArgBinding> args;
    args.push_back({DNNL_ARG_SRC, Operand(data_vid, pd->src_desc(), n, "data"), pd->src_desc()});
    WeightRounding rounding = BindWeightsAndPostOps(n, *pd, post, "weight", &args);
    if (!have_dst) dst = DstBuffer(n, pd->dst_desc(), direct);
    args.push_back({DNNL_ARG_DST, dst, pd->dst_desc()});
    FinishNode(n, *pd, dnnl::convolution_forward(*pd), std::move(args), pd->dst_desc(), dst,
               direct, residual, pd->src_desc(), pd->weights_desc(), pd->dst_desc(), rounding);
  }

  /*! \brief Primitive-level dims of a matmul and of its residual (empty: not expressible). */
  struct MatmulForm {
    NodeDims dims;
    Dims residual;
    bool ok = true;
  };

  /*!
   * \brief The forms a matmul may run in, preferred first: folded (GetNodeDims: batch dims of a
   *        folded into M for a 2-D b, else collapsed into one batch dim) and full rank (a's dims,
   *        b padded with 1s: oneDNN broadcasts it). A broadcast residual [.., 1, ..] needs the
   *        full rank unless its leading dims are all 1.
   */
  std::vector<MatmulForm> MatmulForms(const Node& node) {
    const OpSpec& spec = *node.spec;
    const std::vector<int64_t>& A = g_.Info(node.inputs[0]).shape;
    const std::vector<int64_t>& out = node.out.shape;
    size_t rank = A.size();
    MatmulForm folded, full;
    folded.dims = GetNodeDims(g_, node);
    full.dims.src = Dims(A.begin(), A.end());
    std::vector<int64_t> b = PadRank(g_.Info(node.inputs[1]).shape, rank);
    full.dims.weights = Dims(b.begin(), b.end());
    full.dims.dst = Dims(out.begin(), out.end());
    if (spec.has_bias) {
      full.dims.bias = Dims(rank, 1);
      full.dims.bias.back() = out.back();
    }
    if (spec.has_add) {
      std::vector<int64_t> r = PadRank(g_.Info(node.inputs[spec.ResidualIndex()]).shape, rank);
      full.residual = Dims(r.begin(), r.end());
      if (r == out) {
        folded.residual = folded.dims.dst;
      } else if (std::all_of(r.begin(), r.end() - 1, [](int64_t d) { return d == 1; })) {
        folded.residual = Dims(folded.dims.dst.size(), 1);
        folded.residual.back() = r.back();
      } else {
        folded.ok = false;
      }
    }
    return {folded, full};
  }

  /*!
   * \brief When node n's value is read only by a transpose, possibly through reshapes to the
   *        same shape (and none is a region output), the layout that makes the transpose's
   *        output plain: the matmul writes it directly.
   */
  std::optional<MemDesc> TransposedDst(int n, const Dims& dst_dims) {
    int cur = n;  // n, then each reshape to the same shape between n and the transpose
    for (size_t m = n + 1; m < g_.nodes.size(); ++m) {
      const ValueState& v = vals_[g_.ValueId({RefKind::kNode, cur})];
      if (v.is_output || v.node_uses != 1) return std::nullopt;
      const Node& c = g_.nodes[m];
      if (std::find(c.inputs.begin(), c.inputs.end(), ValueRef{RefKind::kNode, cur}) ==
          c.inputs.end()) {
        continue;
      }
      if (c.spec->base == BaseOp::kReshape && c.out.shape == g_.nodes[cur].out.shape) {
        cur = static_cast<int>(m);
        continue;
      }
      if (c.spec->base != BaseOp::kTranspose) return std::nullopt;
      std::vector<int> q(c.attrs.axes.begin(), c.attrs.axes.end());
      try {
        MemDesc md = PlainDesc(c.out.shape, c.out.dtype).permute_axes(q);
        return TryReshape(md, dst_dims);
      } catch (const dnnl::error&) {
        return std::nullopt;
      }
    }
    return std::nullopt;
  }

  /*!
   * \brief A qmatmul with a dynamic src scale: one host step computes this call's range of the
   *        float32 `a`, its scale (and u8 zero point) into slots and `a` quantized with them
   *        (int8_attrs.h, DynamicQuantize); the int8 matmul reads the same slots as its src
   *        scale / zero point. Weights are packed once; the output is f32.
   */
  void PlanDynamicQMatmul(int n) {
    const Node& node = g_.nodes[n];
    const OpSpec& spec = *node.spec;
    using dt = dnnl::memory::data_type;
    NodeDims dims = GetNodeDims(g_, node);  // 2-D b: a folded into [M, K]
    bool u8 = node.quant.dynamic_dtype == DType::kUInt8;
    dt dt_q = u8 ? dt::u8 : dt::s8;
    int out_vid = g_.ValueId({RefKind::kNode, n});
    bool direct = vals_[out_vid].direct_output >= 0;
    MemDesc a_md = PlainLike(MemDesc(dims.src, dt::f32, tag::any));
    MemDesc q_md = PlainLike(MemDesc(dims.src, dt_q, tag::any));
    MemDesc scale_md({1}, dt::f32, tag::a), zp_md({1}, dt::s32, tag::a);
    int a_vid = g_.ValueId(node.inputs[0]);
    auto key = std::make_pair(a_vid, u8);
    auto shared = dynamic_quants_.find(key);
    if (shared == dynamic_quants_.end()) {
      // The last dynamic qmatmul quantizing the same value to the same dtype (q / k / v
      // projections of one tensor) reuses this quantization: its slots live until then.
      int last = n;
      for (size_t m = n + 1; m < g_.nodes.size(); ++m) {
        const Node& c = g_.nodes[m];
        if (c.spec->base == BaseOp::kMatmul && c.quant.dynamic_src &&
            (c.quant.dynamic_dtype == DType::kUInt8) == u8 && g_.ValueId(c.inputs[0]) == a_vid) {
          last = static_cast<int>(m);
        }
      }
      BufRef a = Operand(a_vid, a_md, n, "a");
      DynamicQuant dq{{BufKind::kSlot, slots_.Alloc(sizeof(float))},
                      {BufKind::kSlot, slots_.Alloc(sizeof(int32_t))},
                      {BufKind::kSlot, slots_.Alloc(q_md.get_size())}};
      Step quant;  // range, scale, zero point and a_q in one host step
      quant.host = HostOp::kDynamicQuantize;
      quant.node = n;
      quant.host_dims = {u8 ? 1 : 0};
      quant.host_label = g_.symbol + ": node " + std::to_string(n) + " (" + node.op + ")";
      quant.args = {{DNNL_ARG_SRC, a, a_md}, {DNNL_ARG_DST, dq.a_q, q_md},
                    {DNNL_ARG_ATTR_SCALES | DNNL_ARG_DST, dq.scale, scale_md},
                    {DNNL_ARG_ATTR_ZERO_POINTS | DNNL_ARG_DST, dq.zp, zp_md}};
      plan_->steps.push_back(std::move(quant));
      for (const BufRef& b : {dq.scale, dq.zp, dq.a_q}) release_after_[last].push_back(b.index);
      shared = dynamic_quants_.emplace(key, dq).first;
    }
    const DynamicQuant& dq = shared->second;

    PostOps post;
    if (spec.has_add) {
      post.residual = ResidualMode::kBinary;
      post.residual_md = PlainLike(MemDesc(dims.dst, dt::f32, tag::any));
    }
    MemDesc w_any(dims.weights, dt::s8, tag::any);
    MemDesc dst_md = PlainLike(MemDesc(dims.dst, dt::f32, tag::any));
    auto pd = MakeMatmulPd(node, dims, q_md, w_any, dst_md, post);
    if (!pd) Fail(n, "oneDNN has no int8 matmul implementation for these shapes");
    std::vector<ArgBinding> args;
    args.push_back({DNNL_ARG_SRC, dq.a_q, q_md});
    WeightRounding rounding = BindWeightsAndPostOps(n, *pd, post, "b", &args);
    args.push_back({DNNL_ARG_ATTR_SCALES | DNNL_ARG_SRC, dq.scale, scale_md});
    if (u8) args.push_back({DNNL_ARG_ATTR_ZERO_POINTS | DNNL_ARG_SRC, dq.zp, zp_md});
    MemDesc value_md = PlainDesc(node.out.shape, node.out.dtype);
    BufRef dst = DstBuffer(n, value_md, direct);
    args.push_back({DNNL_ARG_DST, dst, pd->dst_desc()});
    FinishNode(n, *pd, dnnl::matmul(*pd), std::move(args), value_md, dst, direct,
               spec.has_add ? "binary_add" : "none", q_md, pd->weights_desc(), pd->dst_desc(),
               rounding);
  }

  void PlanMatmul(int n) {
    const Node& node = g_.nodes[n];
    const OpSpec& spec = *node.spec;
    using dt = dnnl::memory::data_type;
    dt dt_src = ToDnnl(g_.Info(node.inputs[0]).dtype);
    dt dt_w = ToDnnl(g_.Info(node.inputs[1]).dtype);
    dt dt_dst = ToDnnl(node.out.dtype);
    int out_vid = g_.ValueId({RefKind::kNode, n});
    int a_vid = g_.ValueId(node.inputs[0]), b_vid = g_.ValueId(node.inputs[1]);
    // a constant b, or a view of one (a transposed weight): packed once into oneDNN's layout
    bool b_const = vals_[b_vid].buf.kind == BufKind::kConst;
    bool direct = vals_[out_vid].direct_output >= 0;
    float output_scale = static_cast<float>(node.attrs.output_scale);
    // Residual: summed in place when it is a plain intermediate of the output's shape dying here.
    bool sum_inplace = false;
    dt r_dt = dt::undef;
    ValueRef r;
    if (spec.has_add) {
      r = node.inputs[spec.ResidualIndex()];
      const ValueState& rv = vals_[g_.ValueId(r)];
      r_dt = rv.md.get_data_type();
      sum_inplace = !direct && output_scale == 1.f && g_.Info(r).shape == node.out.shape &&
                    DataTypeBytes(r_dt) == DataTypeBytes(dt_dst) &&
                    CanSumInPlace(n, r, PlainLike(rv.md)) && IsPlain(rv.md);
    }
    auto post_for = [&](const MatmulForm& f) {
      PostOps post;
      post.output_scale = output_scale;
      if (spec.has_bias && output_scale != 1.f) {
        post.bias_md = PlainLike(MemDesc(f.dims.bias, dt::f32, tag::any));
      }
      if (spec.has_add) {
        post.residual_scale = ResidualScale(node);
        post.residual_zp = ResidualZeroPoint(node);
        if (sum_inplace) {
          post.residual = ResidualMode::kSum;
          post.sum_dt = r_dt == dt_dst ? dt::undef : r_dt;
        } else {
          post.residual = ResidualMode::kBinary;
          post.residual_md = PlainLike(MemDesc(f.residual, r_dt, tag::any));
        }
      }
      return post;
    };
    // Run on the operands' own layouts (views of transposes / reshapes) when oneDNN has an
    // optimized kernel for them; otherwise on plain operands (reordered once per call).
    std::vector<MatmulForm> forms = MatmulForms(node);
    const MatmulForm* form = nullptr;
    std::optional<dnnl::matmul::primitive_desc> pd;
    PostOps post;
    // Candidates by the number of operands made plain (0: both as they are, in any form,
    // before 1: a or b reordered, before 2). Within a level a brgemm kernel beats any other
    // optimized one (gemm:jit ran MiniLM's context matmul on the head views, brg is faster),
    // else the first optimized kernel wins.
    int best_rank = 0;
    for (int copies = 0; copies <= 2 && best_rank == 0; ++copies) {
      for (const MatmulForm& f : forms) {
        if (!f.ok || best_rank == 2) continue;
        MemDesc plain_src = PlainLike(MemDesc(f.dims.src, dt_src, tag::any));
        MemDesc plain_w = b_const ? MemDesc(f.dims.weights, dt_w, tag::any)
                                  : PlainLike(MemDesc(f.dims.weights, dt_w, tag::any));
        // each operand as the view it is (no copy) or, when that is not plain, a plain copy
        std::vector<std::pair<MemDesc, int>> a_opts, b_opts;
        std::optional<MemDesc> sv = TryReshape(vals_[a_vid].md, f.dims.src);
        if (sv) a_opts.push_back({*sv, 0});
        if (!sv || !SameLayout(*sv, plain_src)) a_opts.push_back({plain_src, 1});
        std::optional<MemDesc> wv = TryReshape(vals_[b_vid].md, f.dims.weights);
        if (b_const || wv) b_opts.push_back({b_const ? plain_w : *wv, 0});
        if (!b_const && (!wv || !SameLayout(*wv, plain_w))) b_opts.push_back({plain_w, 1});
        for (const auto& a_opt : a_opts) {
          for (const auto& b_opt : b_opts) {
            if (best_rank == 2 || a_opt.second + b_opt.second != copies) continue;
            const MemDesc& src = a_opt.first;
            const MemDesc& w = b_opt.first;
            PostOps p = post_for(f);
            auto cand = MakeMatmulPd(node, f.dims, src, w,
                                     PlainLike(MemDesc(f.dims.dst, dt_dst, tag::any)), p);
            int rank = cand ? MatmulImplRank(ImplName(*cand)) : 0;
            if (rank > best_rank) {
              form = &f;
              pd = cand;
              post = p;
              best_rank = rank;
            }
          }
        }
      }
    }
    if (!pd) {
      for (const MatmulForm& f : forms) {
        if (f.ok && form == nullptr) form = &f;
      }
      MemDesc src_md = PlainLike(MemDesc(form->dims.src, dt_src, tag::any));
      MemDesc w_md = b_const ? MemDesc(form->dims.weights, dt_w, tag::any)
                             : PlainLike(MemDesc(form->dims.weights, dt_w, tag::any));
      post = post_for(*form);
      pd = MakeMatmulPd(node, form->dims, src_md, w_md,
                        PlainLike(MemDesc(form->dims.dst, dt_dst, tag::any)), post);
      if (!pd) Fail(n, "oneDNN has no matmul implementation for these shapes");
    }
    MemDesc value_md = PlainDesc(node.out.shape, node.out.dtype);
    if (!direct && !sum_inplace) {
      // Write straight into the layout of a following transpose's plain output.
      std::optional<MemDesc> tdst = TransposedDst(n, form->dims.dst);
      if (tdst && !SameLayout(*tdst, pd->dst_desc())) {
        auto pdt = MakeMatmulPd(node, form->dims, pd->src_desc(), pd->weights_desc(), *tdst,
                                post);
        if (pdt && !IsReferenceImpl(ImplName(*pdt))) {
          pd = pdt;
          value_md = *TryReshape(*tdst, Dims(node.out.shape.begin(), node.out.shape.end()));
        }
      }
    }
    std::string residual = "none";
    BufRef dst;
    bool have_dst = false;
    if (sum_inplace) {
      ValueState& rv = vals_[g_.ValueId(r)];
      dst = rv.buf;
      have_dst = true;
      rv.transferred = true;
      residual = "sum_inplace";
    } else if (spec.has_add) {
      residual = "binary_add";
    }
    std::vector<ArgBinding> args;
    args.push_back({DNNL_ARG_SRC, Operand(a_vid, pd->src_desc(), n, "a"), pd->src_desc()});
    WeightRounding rounding = BindWeightsAndPostOps(n, *pd, post, "b", &args);
    if (!have_dst) dst = DstBuffer(n, value_md, direct);
    args.push_back({DNNL_ARG_DST, dst, pd->dst_desc()});
    FinishNode(n, *pd, dnnl::matmul(*pd), std::move(args), value_md, dst, direct, residual,
               pd->src_desc(), pd->weights_desc(), pd->dst_desc(), rounding);
  }

  void PlanPool(int n) {
    const Node& node = g_.nodes[n];
    NodeDims dims = GetNodeDims(g_, node);
    auto dt = ToDnnl(node.out.dtype);
    int data_vid = g_.ValueId(node.inputs[0]);
    int out_vid = g_.ValueId({RefKind::kNode, n});
    MemDesc any_dst(dims.dst, dt, tag::any);
    PostOps post;
    post.pool_rescale = PoolRescale(node);
    post.pool_shift = PoolShift(node);
    std::vector<float> fix = PoolDivisorFix(g_, node);
    BufRef fix_buf;
    if (!fix.empty()) {
      post.pool_scale_md =
          PlainDesc({1, 1, node.out.shape[2], node.out.shape[3]}, DType::kFloat32);
      fix_buf = AddOwnedConst(fix.size() * sizeof(float));
      std::copy(fix.begin(), fix.end(), static_cast<float*>(plan_->const_ptrs[fix_buf.index]));
    }
    // Pools run on the producer's layout (no reorder).
    MemDesc src_md = vals_[data_vid].md;
    auto pd = MakePoolPd(node, dims, src_md, any_dst, post);
    if (!pd) {
      src_md = PlainLike(src_md);
      pd = MakePoolPd(node, dims, src_md, any_dst, post);
    }
    // int8 pools have jit kernels for nhwc only: reorder a plain NCHW input rather than run
    // the reference kernel.
    if (node.spec->quantized && (!pd || ImplName(*pd).rfind("ref", 0) == 0)) {
      MemDesc nhwc(dims.src, dt, tag::acdb);
      auto pdn = MakePoolPd(node, dims, nhwc, any_dst, post);
      if (pdn && ImplName(*pdn).rfind("ref", 0) != 0) {
        src_md = nhwc;
        pd = pdn;
      }
    }
    if (!pd) Fail(n, "oneDNN has no pooling implementation for these shapes");
    std::string impl0 = ImplName(*pd);
    MemDesc plain_dst = PlainDesc(node.out.shape, node.out.dtype);
    bool direct = false;
    if (vals_[out_vid].direct_output >= 0) {
      if (SameLayout(pd->dst_desc(), plain_dst)) {
        direct = true;
      } else if (OnlyOutput(out_vid)) {
        auto pdd = MakePoolPd(node, dims, src_md, plain_dst, post);
        if (pdd && ImplName(*pdd) == impl0) {
          pd = pdd;
          direct = true;
        }
      }
    }
    std::vector<ArgBinding> args;
    args.push_back({DNNL_ARG_SRC, Operand(data_vid, pd->src_desc(), n, "data"), pd->src_desc()});
    if (post.pool_scale_md) {
      args.push_back(
          {DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1, fix_buf, *post.pool_scale_md});
    }
    BufRef dst = DstBuffer(n, pd->dst_desc(), direct);
    args.push_back({DNNL_ARG_DST, dst, pd->dst_desc()});
    FinishNode(n, *pd, dnnl::pooling_forward(*pd), std::move(args), pd->dst_desc(), dst, direct,
               "none", pd->src_desc(), MemDesc(), pd->dst_desc());
  }

  /*!
   * \brief quantize / dequantize: one reorder that scales, converts and changes the layout.
   *        It writes the layout its first consumer prefers (a conv's src layout, nhwc for an
   *        int8 pool), plain when the value is only a region output, else the input's layout.
   */
  void PlanQuantReorder(int n) {
    const Node& node = g_.nodes[n];
    int src_vid = g_.ValueId(node.inputs[0]);
    int out_vid = g_.ValueId({RefKind::kNode, n});
    auto dt_dst = ToDnnl(node.out.dtype);
    MemDesc src_md = vals_[src_vid].md;
    MemDesc plain_dst = PlainDesc(node.out.shape, node.out.dtype);
    bool is_output = vals_[out_vid].direct_output >= 0;
    MemDesc dst_md = plain_dst;
    if (!(is_output && OnlyOutput(out_vid))) {
      std::optional<MemDesc> want = ConsumerLayout(n, dt_dst);
      if (!want) want = WithDataType(src_md, dt_dst);
      if (want) dst_md = *want;
    }
    auto pd = MakeQuantReorderPd(node, src_md, dst_md);
    if (!pd && !SameLayout(dst_md, plain_dst)) {
      dst_md = plain_dst;
      pd = MakeQuantReorderPd(node, src_md, dst_md);
    }
    if (!pd) {
      Fail(n, "oneDNN cannot reorder " + FormatStr(src_md) + " -> " + FormatStr(dst_md) +
                  " with scales");
    }
    bool direct = is_output && SameLayout(dst_md, plain_dst);
    std::vector<ArgBinding> args;
    args.push_back({DNNL_ARG_FROM, Operand(src_vid, src_md, n, "data"), src_md});
    BindScales(n, 1.f, &args);
    BufRef dst = DstBuffer(n, dst_md, direct);
    args.push_back({DNNL_ARG_TO, dst, dst_md});
    FinishNode(n, *pd, dnnl::reorder(*pd), std::move(args), dst_md, dst, direct, "none", src_md,
               MemDesc(), dst_md);
  }

  /*! \brief Records a node that runs no primitive of its own (a view) for get_kernel_info. */
  void RecordView(int n, const std::string& impl, const MemDesc& src_md, const MemDesc& dst_md) {
    NodeRecord rec;
    rec.op = g_.nodes[n].op;
    rec.impl = impl;
    rec.src_format = FormatStr(src_md);
    rec.dst_format = FormatStr(dst_md);
    rec.residual = "none";
    rec.src_dtype = DataTypeName(src_md.get_data_type());
    rec.dst_dtype = DataTypeName(dst_md.get_data_type());
    plan_->nodes.push_back(rec);
  }

  /*! \brief The plain layout of node n's output, and whether it is written to the user. */
  MemDesc PlainOut(int n, bool* direct) {
    int vid = g_.ValueId({RefKind::kNode, n});
    *direct = vals_[vid].direct_output >= 0;
    return PlainDesc(g_.nodes[n].out.shape, g_.nodes[n].out.dtype);
  }

  /*! \brief layer_norm over the last axis: [M, C] plain, gamma / beta used in place. */
  void PlanLayerNorm(int n) {
    const Node& node = g_.nodes[n];
    const std::vector<int64_t>& shape = node.out.shape;
    int64_t c = shape.back();
    int64_t m = NumElements(shape) / c;
    using dt = dnnl::memory::data_type;
    MemDesc src_md({m, c}, dt::f32, tag::ab);
    bool direct = false;
    MemDesc value_md = PlainOut(n, &direct);
    dnnl::layer_normalization_forward::primitive_desc pd;
    try {
      pd = dnnl::layer_normalization_forward::primitive_desc(
          CpuEngine(), dnnl::prop_kind::forward_inference, src_md, src_md,
          static_cast<float>(node.attrs.epsilon),
          dnnl::normalization_flags::use_scale | dnnl::normalization_flags::use_shift,
          ScratchpadAttr());
    } catch (const dnnl::error& e) {
      Fail(n, std::string("oneDNN has no layer_normalization implementation: ") + e.what());
    }
    std::vector<ArgBinding> args;
    args.push_back({DNNL_ARG_SRC, Operand(g_.ValueId(node.inputs[0]), src_md, n, "data"), src_md});
    MemDesc param_md({c}, dt::f32, tag::a);
    args.push_back({DNNL_ARG_SCALE, Operand(g_.ValueId(node.inputs[1]), param_md, n, "gamma"),
                    param_md});
    args.push_back({DNNL_ARG_SHIFT, Operand(g_.ValueId(node.inputs[2]), param_md, n, "beta"),
                    param_md});
    BufRef dst = DstBuffer(n, value_md, direct);
    args.push_back({DNNL_ARG_DST, dst, src_md});
    FinishNode(n, pd, dnnl::layer_normalization_forward(pd), std::move(args), value_md, dst,
               direct, "none", src_md, MemDesc(), src_md);
  }

  /*!
   * \brief softmax (softmax_accurate over attrs.axis; nan_to_zero: a host step zeroes NaNs in
   *        the result) and standalone activations (eltwise), on plain data.
   */
  void PlanSoftmaxOrEltwise(int n) {
    const Node& node = g_.nodes[n];
    bool direct = false;
    MemDesc md = PlainOut(n, &direct);
    std::vector<ArgBinding> args;
    args.push_back({DNNL_ARG_SRC, Operand(g_.ValueId(node.inputs[0]), md, n, "data"), md});
    BufRef dst = DstBuffer(n, md, direct);
    args.push_back({DNNL_ARG_DST, dst, md});
    auto prop = dnnl::prop_kind::forward_inference;
    try {
      if (node.spec->base == BaseOp::kSoftmax) {
        dnnl::softmax_forward::primitive_desc pd(CpuEngine(), prop,
                                                 dnnl::algorithm::softmax_accurate, md, md,
                                                 static_cast<int>(node.attrs.axis),
                                                 ScratchpadAttr());
        FinishNode(n, pd, dnnl::softmax_forward(pd), std::move(args), md, dst, direct, "none", md,
                   MemDesc(), md);
        if (node.attrs.nan_to_zero) {
          Step step;
          step.host = HostOp::kNanToZero;
          step.node = n;
          step.args.push_back({DNNL_ARG_DST, dst, md});
          plan_->steps.push_back(std::move(step));
        }
      } else {
        EltwiseAlg e = ActivationAlg(node.spec->act, node.attrs);
        dnnl::eltwise_forward::primitive_desc pd(CpuEngine(), prop, e.alg, md, md, e.alpha,
                                                 e.beta, ScratchpadAttr());
        FinishNode(n, pd, dnnl::eltwise_forward(pd), std::move(args), md, dst, direct, "none", md,
                   MemDesc(), md);
      }
    } catch (const dnnl::error& e) {
      Fail(n, std::string("oneDNN cannot create the primitive: ") + e.what());
    }
  }

  /*! \brief `shape` with leading 1s up to `rank`. */
  static std::vector<int64_t> PadRank(const std::vector<int64_t>& shape, size_t rank) {
    std::vector<int64_t> out(rank - shape.size(), 1);
    out.insert(out.end(), shape.begin(), shape.end());
    return out;
  }

  /*!
   * \brief Broadcast binary: oneDNN's binary broadcasts src1 only. A broadcast `a` swaps the
   *        operands (add / multiply / maximum / minimum; subtract as -(b - a)); otherwise (divide,
   *        or both operands broadcast) `a` is first expanded by a host broadcast copy.
   */
  void PlanBinary(int n) {
    const Node& node = g_.nodes[n];
    bool direct = false;
    MemDesc dst_md = PlainOut(n, &direct);
    const std::vector<int64_t>& out = node.out.shape;
    std::vector<int64_t> sa = PadRank(g_.Info(node.inputs[0]).shape, out.size());
    std::vector<int64_t> sb = PadRank(g_.Info(node.inputs[1]).shape, out.size());
    int src0 = 0, src1 = 1;
    bool negate = false, expand = false;
    BinaryAlg alg = node.spec->binary;
    if (sa != out) {
      bool commutative = alg == BinaryAlg::kAdd || alg == BinaryAlg::kMultiply ||
                         alg == BinaryAlg::kMaximum || alg == BinaryAlg::kMinimum;
      if (sb == out && (commutative || alg == BinaryAlg::kSubtract)) {
        std::swap(src0, src1);
        std::swap(sa, sb);
        negate = alg == BinaryAlg::kSubtract;
      } else {
        expand = true;
      }
    }
    dnnl::post_ops ops;
    if (negate) ops.append_eltwise(dnnl::algorithm::eltwise_linear, -1.f, 0.f);
    AppendActivation(node, &ops);
    MemDesc md0 = PlainDesc(sa, DType::kFloat32), md1 = PlainDesc(sb, DType::kFloat32);
    dnnl::binary::primitive_desc pd;
    try {
      pd = dnnl::binary::primitive_desc(CpuEngine(), BinaryAlgorithm(alg), dst_md, md1, dst_md,
                                        ScratchpadAttr(ops));
    } catch (const dnnl::error& e) {
      Fail(n, std::string("oneDNN has no binary implementation: ") + e.what());
    }
    int vid0 = g_.ValueId(node.inputs[src0]);
    BufRef buf0 = Operand(vid0, md0, n, BinaryAlgName(alg));
    if (expand) {
      std::vector<int64_t> strides(sa.size(), 0);
      int64_t stride = 1;
      for (size_t d = sa.size(); d-- > 0;) {
        strides[d] = sa[d] == 1 ? 0 : stride;
        stride *= sa[d];
      }
      Step step;
      step.host = HostOp::kBroadcastCopy;
      step.node = n;
      step.host_dims = out;
      step.host_strides = strides;
      BufRef full = {BufKind::kSlot, slots_.Alloc(dst_md.get_size())};
      step.args.push_back({DNNL_ARG_FROM, buf0, md0});
      step.args.push_back({DNNL_ARG_TO, full, dst_md});
      ReorderRecord rec;
      rec.step = static_cast<int>(plan_->steps.size());
      rec.before_node = n;
      rec.value = Where(vid0);
      rec.reason = "broadcast a " + ShapeStr(sa) + " -> " + ShapeStr(out) +
                   " (oneDNN's binary broadcasts src1 only)";
      rec.src_format = FormatStr(md0);
      rec.dst_format = FormatStr(dst_md);
      plan_->reorders.push_back(rec);
      plan_->steps.push_back(std::move(step));
      buf0 = full;
      md0 = dst_md;
    }
    std::vector<ArgBinding> args;
    args.push_back({DNNL_ARG_SRC_0, buf0, dst_md});
    args.push_back({DNNL_ARG_SRC_1, Operand(g_.ValueId(node.inputs[src1]), md1, n, "b"), md1});
    // In place (oneDNN's binary allows dst == src0) when src0 is an intermediate dying here.
    const ValueRef& r0 = node.inputs[src0];
    ValueState& v0 = vals_[vid0];
    bool in_place = !expand && !direct && buf0.kind == v0.buf.kind &&
                    buf0.index == v0.buf.index && CanSumInPlace(n, r0, dst_md);
    BufRef dst = in_place ? buf0 : DstBuffer(n, dst_md, direct);
    if (in_place) v0.transferred = true;
    if (expand) slots_.Release(buf0.index);  // the expanded copy is read by this node only
    args.push_back({DNNL_ARG_DST, dst, dst_md});
    FinishNode(n, pd, dnnl::binary(pd), std::move(args), dst_md, dst, direct, "none", md0,
               md1, dst_md);
  }

  /*!
   * \brief reshape / transpose: the output is a view of the data's buffer (a reshaped or
   *        permuted desc); when the data's layout cannot be reshaped, it is first reordered to
   *        plain (once, reported as a reorder before this node).
   */
  void PlanView(int n) {
    const Node& node = g_.nodes[n];
    int data_vid = g_.ValueId(node.inputs[0]);
    Dims out_dims(node.out.shape.begin(), node.out.shape.end());
    auto make_view = [&](const MemDesc& md) -> std::optional<MemDesc> {
      if (node.spec->base == BaseOp::kReshape) return TryReshape(md, out_dims);
      std::vector<int> perm(node.attrs.axes.size());
      for (size_t i = 0; i < perm.size(); ++i) perm[node.attrs.axes[i]] = static_cast<int>(i);
      try {
        return md.permute_axes(perm);
      } catch (const dnnl::error&) {
        return std::nullopt;
      }
    };
    const ValueState& v = vals_[data_vid];
    MemDesc src_md = v.md;
    BufRef buf = v.buf;
    std::optional<MemDesc> view = make_view(src_md);
    std::string impl = "view";
    if (!view) {
      src_md = PlainLike(v.md);
      buf = Operand(data_vid, src_md, n, "data");
      view = make_view(src_md);
      if (!view) Fail(n, "cannot view the data " + FormatStr(src_md) + " with the output dims");
      impl = "view_after_reorder";
    }
    if (buf.kind == BufKind::kSlot) AddAlias(buf.index);
    RecordView(n, impl, src_md, *view);
    int vid = g_.ValueId({RefKind::kNode, n});
    vals_[vid].md = *view;
    vals_[vid].buf = buf;
  }

  /*! \brief The only node reading node n's value, or -1 (also when it is a region output). */
  int SoleReader(int n) const {
    const ValueState& v = vals_[g_.ValueId({RefKind::kNode, n})];
    if (v.is_output || v.node_uses != 1) return -1;
    for (size_t m = n + 1; m < g_.nodes.size(); ++m) {
      const std::vector<ValueRef>& in = g_.nodes[m].inputs;
      if (std::find(in.begin(), in.end(), ValueRef{RefKind::kNode, n}) != in.end()) {
        return static_cast<int>(m);
      }
    }
    return -1;
  }

  /*! \brief A float32 matmul with no bias, activation or int8 (the mask add is allowed). */
  bool PlainFloatMatmul(const Node& node, bool allow_add) const {
    const OpSpec& spec = *node.spec;
    if (spec.base != BaseOp::kMatmul || spec.quantized || spec.has_bias ||
        spec.act != Activation::kNone || (spec.has_add && !allow_add)) {
      return false;
    }
    for (const ValueRef& r : node.inputs) {
      if (g_.Info(r).dtype != DType::kFloat32) return false;
    }
    return node.out.dtype == DType::kFloat32;
  }

  /*!
   * \brief Find `matmul[_add] -> softmax (last axis) -> matmul` chains (attention.h) whose
   *        scores and probabilities are read by nothing else: the second matmul's node runs
   *        them as one fused step. Operands share their leading dims (the mask broadcasts);
   *        off with TVM_ONEDNN_FUSED_ATTENTION=0, or when the CPU has no AVX2.
   */
  void FindAttentionChains() {
    const char* env = std::getenv("TVM_ONEDNN_FUSED_ATTENTION");
    if (AttentionIsa()[0] == '\0' || (env != nullptr && std::strcmp(env, "0") == 0)) return;
    for (int s = 0; s < static_cast<int>(g_.nodes.size()); ++s) {
      const Node& scores = g_.nodes[s];
      if (!PlainFloatMatmul(scores, true)) continue;
      const std::vector<int64_t>& so = scores.out.shape;
      size_t rank = so.size();
      if (rank < 2 || rank > 2 + kAttentionMaxLead) continue;
      int sm = SoleReader(s);
      if (sm < 0) continue;
      const Node& softmax = g_.nodes[sm];
      int64_t axis = softmax.attrs.axis < 0 ? softmax.attrs.axis + static_cast<int64_t>(rank)
                                            : softmax.attrs.axis;
      if (softmax.spec->base != BaseOp::kSoftmax || axis != static_cast<int64_t>(rank) - 1) {
        continue;
      }
      int p = SoleReader(sm);
      if (p < 0) continue;
      const Node& out = g_.nodes[p];
      if (!PlainFloatMatmul(out, false) || out.attrs.output_scale != 1.0 ||
          out.inputs[0] != ValueRef{RefKind::kNode, sm} ||
          out.inputs[1] == ValueRef{RefKind::kNode, sm}) {
        continue;
      }
      const std::vector<int64_t>& q = g_.Info(scores.inputs[0]).shape;
      const std::vector<int64_t>& k = g_.Info(scores.inputs[1]).shape;
      const std::vector<int64_t>& v = g_.Info(out.inputs[1]).shape;
      const std::vector<int64_t>& o = out.out.shape;
      if (q.size() != rank || k.size() != rank || v.size() != rank || o.size() != rank) continue;
      bool same_lead = true;
      for (size_t i = 0; i + 2 < rank; ++i) {
        same_lead = same_lead && q[i] == so[i] && k[i] == so[i] && v[i] == so[i] && o[i] == so[i];
      }
      if (!same_lead || NumElements(so) == 0 || NumElements(o) == 0 || q[rank - 1] == 0) continue;
      attention_[p] = {s, sm};
      fused_into_[s] = p;
      fused_into_[sm] = p;
      vals_[g_.ValueId({RefKind::kNode, s})].fused = true;
      vals_[g_.ValueId({RefKind::kNode, sm})].fused = true;
      for (const ValueRef& r : scores.inputs) {  // q, k and the mask are now read at node p
        ValueState& st = vals_[g_.ValueId(r)];
        if (st.last_use != INT_MAX) st.last_use = std::max(st.last_use, p);
        st.last_node_use = std::max(st.last_node_use, p);
      }
    }
  }

  /*! \brief The kernel-info record of a node computed inside a fused attention step. */
  void RecordFused(int n) {
    NodeRecord rec;
    rec.op = g_.nodes[n].op;
    rec.impl = std::string("fused_attention:") + AttentionIsa() + " (in node " +
               std::to_string(fused_into_.at(n)) + ")";
    rec.residual = "none";
    rec.src_dtype = rec.dst_dtype = "f32";
    plan_->nodes.push_back(rec);
  }

  /*! \brief Whether `md` addresses its elements by strides alone (no blocking, no offset). */
  static bool Strided(const MemDesc& md) {
    return md.get_format_kind() == dnnl::memory::format_kind::blocked &&
           md.get_inner_nblks() == 0 && md.get_submemory_offset() == 0;
  }

  /*!
   * \brief Bind value `r` for the fused step (its own strided layout, else a plain copy) and
   *        fill its element strides over `rank` dims, right-aligned (0 where it broadcasts).
   */
  void BindStrided(const ValueRef& r, size_t rank, int n, const char* role,
                   AttentionStrides* st, std::vector<ArgBinding>* args) {
    int vid = g_.ValueId(r);
    MemDesc md = vals_[vid].md;
    BufRef buf = vals_[vid].buf;
    if (!Strided(md)) {
      md = PlainLike(md);
      buf = Operand(vid, md, n, role);
    }
    Dims dims = md.get_dims(), strides = md.get_strides();
    size_t shift = rank - dims.size();
    for (size_t i = shift; i < rank; ++i) {
      int64_t stride = dims[i - shift] == 1 ? 0 : strides[i - shift];
      if (i + 2 < rank) {
        st->lead[i] = stride;
      } else if (i + 2 == rank) {
        st->row = stride;
      } else {
        st->col = stride;
      }
    }
    args->push_back({DNNL_ARG_SRC, buf, md});
  }

  /*!
   * \brief Node p's attention chain (FindAttentionChains) as one host step: out is written
   *        plain, or in the layout that makes a following transpose's output plain.
   */
  void PlanAttention(int p) {
    const AttentionChain& chain = attention_.at(p);
    const Node& scores = g_.nodes[chain.scores];
    const Node& out = g_.nodes[p];
    const std::vector<int64_t>& so = scores.out.shape;
    size_t rank = so.size();
    auto shape = std::make_shared<AttentionShape>();
    shape->num_lead = static_cast<int>(rank - 2);
    for (size_t i = 0; i + 2 < rank; ++i) shape->lead[i] = so[i];
    shape->sq = so[rank - 2];
    shape->sk = so[rank - 1];
    shape->d = g_.Info(scores.inputs[0]).shape[rank - 1];
    shape->dv = out.out.shape[rank - 1];
    shape->scale = static_cast<float>(scores.attrs.output_scale);
    shape->has_mask = scores.spec->has_add;
    shape->nan_to_zero = g_.nodes[chain.softmax].attrs.nan_to_zero;
    std::vector<ArgBinding> args;
    BindStrided(scores.inputs[0], rank, p, "q", &shape->q, &args);
    BindStrided(scores.inputs[1], rank, p, "k", &shape->k, &args);
    BindStrided(out.inputs[1], rank, p, "v", &shape->v, &args);
    if (shape->has_mask) {
      BindStrided(scores.inputs[scores.spec->ResidualIndex()], rank, p, "mask", &shape->mask,
                  &args);
    }
    bool direct = false;
    MemDesc value_md = PlainOut(p, &direct);
    if (!direct) {
      std::optional<MemDesc> tdst =
          TransposedDst(p, Dims(out.out.shape.begin(), out.out.shape.end()));
      if (tdst && Strided(*tdst) && tdst->get_strides().back() == 1) value_md = *tdst;
    }
    Dims out_strides = value_md.get_strides();
    for (size_t i = 0; i + 2 < rank; ++i) shape->out.lead[i] = out_strides[i];
    shape->out.row = out_strides[rank - 2];
    shape->out.col = out_strides[rank - 1];
    BufRef dst = DstBuffer(p, value_md, direct);
    args.push_back({DNNL_ARG_DST, dst, value_md});
    int threads = std::max(1, GetNumThreads());
    size_t scratch = AttentionScratchBytes(*shape, threads);
    plan_->scratchpad_bytes = std::max(plan_->scratchpad_bytes, scratch);
    args.push_back({DNNL_ARG_SCRATCHPAD,
                    {BufKind::kScratch, 0},
                    MemDesc({static_cast<int64_t>(scratch)}, dnnl::memory::data_type::u8,
                            tag::a)});
    Step step;
    step.host = HostOp::kAttention;
    step.node = p;
    step.host_dims = {threads};
    step.attention = shape;
    step.args = std::move(args);
    NodeRecord rec;
    rec.op = out.op;
    rec.impl = std::string("fused_attention:") + AttentionIsa();
    rec.src_format = FormatStr(step.args[0].md);
    rec.weights_format = FormatStr(step.args[2].md);
    rec.dst_format = FormatStr(value_md);
    rec.residual = shape->has_mask ? "mask_add" : "none";
    rec.src_dtype = rec.dst_dtype = "f32";
    rec.direct_output = direct;
    rec.step = static_cast<int>(plan_->steps.size());
    plan_->nodes.push_back(rec);
    plan_->steps.push_back(std::move(step));
    int vid = g_.ValueId({RefKind::kNode, p});
    vals_[vid].md = value_md;
    vals_[vid].buf = dst;
  }

  void PlanOutputs() {
    for (size_t j = 0; j < g_.outputs.size(); ++j) {
      int vid = g_.ValueId(g_.outputs[j]);
      const ValueState& v = vals_[vid];
      if (v.buf.kind == BufKind::kOutput && v.buf.index == static_cast<int>(j)) continue;
      const TensorInfo& info = g_.Info(g_.outputs[j]);
      MemDesc plain = PlainDesc(info.shape, info.dtype);
      AddReorderStep(v.buf, v.md, {BufKind::kOutput, static_cast<int>(j)}, plain, -1,
                     static_cast<int>(j), Where(vid),
                     "region output " + std::to_string(j) + " " + FormatStr(v.md) + " -> " +
                         FormatStr(plain));
    }
  }

  const Graph& g_;
  const std::vector<tvm::ffi::Tensor>& consts_;
  PackCache* packs_;
  std::unique_ptr<Plan> plan_;
  dnnl::stream init_stream_;
  SlotAllocator slots_;
  std::vector<int> slot_aliases_;  // per slot: values viewing it beyond the first
  std::vector<ValueState> vals_;
  /*! \brief Per-call quantization of a value (dynamic qmatmul), shared by its readers. */
  struct DynamicQuant {
    BufRef scale, zp, a_q;
  };
  std::map<std::pair<int, bool>, DynamicQuant> dynamic_quants_;  // (value, u8) -> slots
  std::map<int, std::vector<int>> release_after_;  // node -> slots freed after it
  /*! \brief The scores matmul and softmax (node indices) a fused output matmul computes. */
  struct AttentionChain {
    int scores, softmax;
  };
  std::map<int, AttentionChain> attention_;  // output node -> its chain
  std::map<int, int> fused_into_;            // scores / softmax node -> output node
};

}  // namespace

std::unique_ptr<Plan> BuildPlan(const Graph& g, const std::vector<tvm::ffi::Tensor>& consts,
                                PackCache* packs) {
  try {
    return Planner(g, consts, packs).Build();
  } catch (const dnnl::error& e) {
    TVM_FFI_THROW(RuntimeError) << g.symbol << ": oneDNN error while building primitives: "
                                << e.what();
  }
  TVM_FFI_UNREACHABLE();
}

}  // namespace tvm_onednn
