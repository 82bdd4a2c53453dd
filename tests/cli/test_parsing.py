"""Argument parsing and the small parsers behind it (no compilation)."""

import json

import pytest

from tvm_onednn.cli.main import build_parser, main
from tvm_onednn.interface.io import InputError, parse_input_shape, parse_input_shapes
from tvm_onednn.target import parse_target


def test_every_subcommand_parses():
    parser = build_parser()
    args = parser.parse_args(
        ["compile", "m.onnx", "-o", "m.so", "--input-shapes", "data:1,3,224,224", "x:2,4",
         "--quantize", "int8", "--calib-data", "calib", "--calib-mode", "entropy",
         "--num-calib-batches", "4", "--exclude-layers", "conv2d_0", "matmul_0",
         "--tuning-records", "w1", "w2", "--dump-ir", "ir"]
    )  # fmt: skip
    assert args.input_shapes == ["data:1,3,224,224", "x:2,4"]
    assert args.quantize == "int8" and args.calib_mode == "entropy"
    assert args.num_calib_batches == 4
    assert args.exclude_layers == ["conv2d_0", "matmul_0"]
    assert args.tuning_records == ["w1", "w2"]
    assert args.float_matmul_math == "bf16" and args.float_stem and args.bias_correction
    args = parser.parse_args(["compile", "m.onnx", "-o", "m.so", "--quantize", "int8",
                              "--float-matmul-math", "f32", "--no-float-stem"])  # fmt: skip
    assert args.float_matmul_math == "f32" and not args.float_stem
    args = parser.parse_args(
        ["inspect", "m.onnx", "--input-shapes", "a:1,2", "--input-shapes", "b:3,4"]
    )
    assert args.input_shapes == ["a:1,2", "b:3,4"]  # repeated flags add up
    args = parser.parse_args(["run", "m.so", "--inputs", "in.npz", "--print-top", "--profile"])
    assert args.print_top == 5 and args.profile and args.output is None
    args = parser.parse_args(["run", "m.so", "--inputs", "in.npz", "--print-top", "3"])
    assert args.print_top == 3
    args = parser.parse_args(["tune", "m.onnx", "--work-dir", "w", "--trials", "16"])
    assert args.trials == 16 and args.trials_per_iter == 8 and args.target is None
    args = parser.parse_args(
        ["benchmark", "m.onnx", "--batch", "1", "8", "--compare", "onnxruntime", "--plot", "p.png"]
    )
    assert args.batch == [1, 8] and args.compare == ["onnxruntime"] and args.plot == "p.png"
    args = parser.parse_args(["inspect", "m.onnx", "--json"])
    assert args.json
    args = parser.parse_args(["demo", "--repeats", "3"])
    assert args.repeats == 3


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["compile", "m.onnx"],  # no -o
        ["run", "m.so"],  # no --inputs
        ["tune", "m.onnx", "--trials", "8"],  # no --work-dir
        ["tune", "m.onnx", "--work-dir", "w", "--trials", "many"],
        ["compile", "m.onnx", "-o", "m.so", "--quantize", "int4"],
        ["compile", "m.onnx", "-o", "m.so", "--calib-mode", "magic"],
        ["compile", "m.onnx", "-o", "m.so", "--float-matmul-math", "fp16"],
        ["benchmark", "m.onnx", "--compare", "tensorflow"],
        ["frobnicate"],
    ],
)
def test_usage_errors_exit_2_without_traceback(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "usage: tvm-onednn" in err and "Traceback" not in err


def test_help_exits_0(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("compile", "run", "tune", "benchmark", "inspect", "demo"):
        assert command in out


@pytest.mark.parametrize(
    "text, expected",
    [
        ("data:1,3,224,224", ("data", [1, 3, 224, 224])),
        ("input:0:1,3,8,8", ("input:0", [1, 3, 8, 8])),  # ONNX names may contain ':'
        ("x:2x4", ("x", [2, 4])),
    ],
)
def test_parse_input_shape(text, expected):
    assert parse_input_shape(text) == expected


@pytest.mark.parametrize("text", ["data", "data:", ":1,2", "data:1,,2", "data:1,-3", "data:a,b"])
def test_parse_input_shape_rejects(text):
    with pytest.raises(InputError, match="bad input shape"):
        parse_input_shape(text)


def test_parse_input_shapes_rejects_duplicates():
    with pytest.raises(InputError, match="twice"):
        parse_input_shapes(["data:1,2", "data:3,4"])


def test_parse_target():
    assert parse_target(None).kind.name == "llvm"
    target = parse_target('{"kind": "llvm", "num-cores": 2}')
    assert int(target.attrs["num-cores"]) == 2
    for bad, match in [
        ("llvm -mcpu=znver3", "JSON object"),
        ('["llvm"]', "kind"),
        ('{"kind": "no-such-kind"}', "invalid target"),
        ('{"kind": "llvm", "no-such-option": 1}', "invalid target"),
    ]:
        with pytest.raises(ValueError, match=match):
            parse_target(bad)


def test_parse_target_from_file(tmp_path):
    path = tmp_path / "target.json"
    path.write_text(json.dumps({"kind": "llvm", "num-cores": 3}))
    assert int(parse_target(str(path)).attrs["num-cores"]) == 3
