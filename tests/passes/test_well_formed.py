"""WellFormedCheck catches ill-formed modules, and prepare_for_onednn runs clean under it."""

import numpy as np
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R

from tvm_onednn import from_onnx
from tvm_onednn.byoc.partition import prepare_for_onednn
from tvm_onednn.passes import IllFormedModuleError, WellFormedCheck


@I.ir_module
class Relu:
    @R.function
    def main(x: R.Tensor((2, 8), "float32")) -> R.Tensor((2, 8), "float32"):
        with R.dataflow():
            y = R.nn.relu(x)
            R.output(y)
        return y


def _with_main(mod: tvm.IRModule, main: relax.Function) -> tvm.IRModule:
    return tvm.IRModule({**dict(mod.functions.items()), mod.get_global_var("main"): main})


@tvm.transform.module_pass(opt_level=0, name="ReturnUndefinedVar")
def return_undefined_var(mod, _ctx):
    main = mod["main"]
    ghost = relax.Var("ghost", relax.TensorType((2, 8), "float32"))
    body = relax.SeqExpr(main.body.blocks, ghost)
    return _with_main(mod, relax.Function(main.params, body, main.ret_ty, main.is_pure, main.attrs))


@tvm.transform.module_pass(opt_level=0, name="BindWrongType")
def bind_wrong_type(mod, _ctx):
    """Binds ``y: (2, 8)`` to a (1, 2, 8) value: the bug CanonicalizeClip had with rank-2 bounds."""
    main = mod["main"]
    (block,) = main.body.blocks
    (binding,) = block.bindings
    x = relax.Var("x", relax.TensorType((1, 2, 8), "float32"))
    value = relax.BlockBuilder().normalize(relax.op.nn.relu(x))
    block = relax.DataflowBlock([relax.VarBinding(binding.var, value)])
    body = relax.SeqExpr([block], main.body.body)
    return _with_main(mod, relax.Function([x], body, main.ret_ty, main.is_pure, main.attrs))


@pytest.mark.parametrize(
    "broken, message",
    [(return_undefined_var, "ghost is not defined"), (bind_wrong_type, "cannot be assigned")],
    ids=["undefined-var", "wrong-type"],
)
def test_instrument_names_the_pass_that_broke_the_module(broken, message, well_formed_check):
    assert relax.analysis.check_well_formed(Relu)
    sequence = tvm.transform.Sequential([relax.transform.FoldConstant(), broken])
    expected = f"output of pass '{broken.info.name}'.*{message}"
    with pytest.raises(IllFormedModuleError, match=expected):
        sequence(Relu)
    assert well_formed_check.checked_passes[-1] == broken.info.name


def test_instrument_blames_an_ill_formed_input_on_the_input():
    with tvm.transform.PassContext():  # no instrument
        broken = return_undefined_var(Relu)
    with tvm.transform.PassContext(instruments=[WellFormedCheck()]):
        with pytest.raises(IllFormedModuleError, match="input of pass 'FoldConstant'"):
            relax.transform.FoldConstant()(broken)


def test_instrument_passes_well_formed_modules(well_formed_check):
    relax.transform.FoldConstant()(Relu)
    assert well_formed_check.checked_passes == ["FoldConstant"]


def _conv_bn_clip_model():
    rng = np.random.default_rng(0)
    arrays = {
        "w": rng.normal(size=(8, 3, 3, 3)),
        "cb": rng.normal(size=8),
        "g": rng.uniform(0.5, 1.5, 8),
        "b": rng.normal(size=8),
        "m": rng.normal(size=8),
        "v": rng.uniform(0.5, 1.5, 8),
        "lo": 0.0,
        "hi": 6.0,
    }
    nodes = [
        helper.make_node("Conv", ["x", "w", "cb"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["bn"]),
        helper.make_node("Clip", ["bn", "lo", "hi"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "conv_bn_clip",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in arrays.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_prepare_for_onednn_is_well_formed_after_every_pass(well_formed_check):
    mod = from_onnx(_conv_bn_clip_model())
    prepared = prepare_for_onednn(mod)
    ops = []

    def visit(e):
        if isinstance(e, relax.Call) and isinstance(e.op, tvm.ir.Op):
            ops.append(e.op.name)

    relax.analysis.post_order_visit(prepared["main"], visit)
    assert ops == ["relax.nn.conv2d", "relax.add", "relax.clip"]
    ours = {"CanonicalizeClip", "FoldBatchNormIntoConv", "FoldConstantsWithNumpy"}
    assert ours | {"PrepareForOneDNN"} <= set(well_formed_check.checked_passes)
