/*!
 * \file registry.cc
 * \brief Global functions registered when libtvm_onednn.so is loaded.
 */
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/map.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/reflection/registry.h>
#include <tvm/ffi/string.h>

#include "executor.h"
#include "int8_attrs.h"
#include "module.h"
#include "op_table.h"
#include "plan_cache.h"

namespace tvm_onednn {

namespace {

std::string VersionString() {
  const dnnl_version_t* v = dnnl_version();
  return std::to_string(v->major) + "." + std::to_string(v->minor) + "." +
         std::to_string(v->patch);
}

}  // namespace

TVM_FFI_STATIC_INIT_BLOCK() {
  namespace refl = ::tvm::ffi::reflection;
  refl::GlobalDef()
      .def("onednn.create_module",
           [](const ffi::String& json) { return OneDNNJSONModule::Create(std::string(json)); })
      .def("ffi.Module.load_from_bytes.onednn_json",
           [](const ffi::Bytes& bytes) { return OneDNNJSONModule::LoadFromBytes(bytes); })
      .def("onednn.module_save_to_bytes",
           [](const ffi::Module& mod) { return mod->SaveToBytes(); })
      .def("onednn.set_num_threads", [](int n) { SetNumThreads(n); })
      .def("onednn.get_num_threads", []() { return GetNumThreads(); })
      .def("onednn.set_plan_cache_size", [](int64_t n) { SetPlanCacheCapacity(n); })
      .def("onednn.get_plan_cache_size", []() { return PlanCacheCapacity(); })
      .def("onednn.version", []() { return ffi::String(VersionString()); })
      .def("onednn.subgraph_format_version", []() { return kSubgraphFormatVersion; })
      .def("onednn.cpu_isa", []() { return ffi::String(CpuIsaName()); })
      .def("onednn.set_int8_saturation_guard", [](int mode) { SetInt8SaturationGuard(mode); })
      .def("onednn.get_int8_saturation_guard",
           []() {
             ffi::Map<ffi::String, ffi::Any> m;
             m.Set("mode", static_cast<int64_t>(Int8SaturationGuardMode()));
             m.Set("active", Int8SaturationGuardActive());
             m.Set("vnni", CpuHasVnni());
             return m;
           })
      .def("onednn.supported_composites", []() {
        ffi::Array<ffi::String> names;
        for (const OpSpec& op : AllOps()) names.push_back(op.name);
        return names;
      });
}

}  // namespace tvm_onednn
