"""``tvm-onednn demo`` (what ``scripts/demo.sh`` runs) in a fresh process, checked on its output.

The demo compiles MobileNetV2 (real ImageNet weights) once with a free batch, fp32 and int8,
and runs batch 1 and a larger batch from the same libraries. Checked: the float32 top-1 of
the cat photo (skimage's ``chelsea``) is ImageNet class 285 (Egyptian cat), as torch's
forward of the same weights says too; float32 matches onnxruntime; batch 1 equals the first
item of the larger batch; every system was timed at every batch.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
EGYPTIAN_CAT = 285

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")


def test_cat_photo_is_an_egyptian_cat_for_torch():
    """The independent reference for the demo's class: torch's forward on the same crop."""
    import torch

    from tvm_onednn.models import imagenet_batch, mobilenet_v2_torch

    try:
        model = mobilenet_v2_torch()
    except (ModuleNotFoundError, FileNotFoundError) as err:
        pytest.skip(f"MobileNetV2 weights not installed: {err}")
    x, labels = imagenet_batch(["chelsea"])
    with torch.inference_mode():
        logits = model(torch.from_numpy(x)).numpy()
    assert labels[0] == EGYPTIAN_CAT and int(np.argmax(logits[0])) == EGYPTIAN_CAT


def test_demo_runs():
    from tvm_onednn.models import mobilenet_v2_weights_path

    try:
        mobilenet_v2_weights_path()
    except (ModuleNotFoundError, FileNotFoundError) as err:
        pytest.skip(f"MobileNetV2 weights not installed: {err}")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, "-m", "tvm_onednn", "demo", "--batch", "1", "3", "--repeats", "2"],
        capture_output=True, check=False, text=True, timeout=600, env=env, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "input data:[batch, 3, 224, 224], compiled once" in out
    cat = re.search(r"chelsea \(label 285.*?\)\n\s+fp32: (\d+).*\n\s+int8: (\d+)", out)
    assert cat, out
    assert int(cat.group(1)) == EGYPTIAN_CAT
    system = r"(tvm-onednn fp32|tvm-onednn int8|onnxruntime)"
    rows = re.findall(rf"^\s+(\d+) {system}\s+([\d.]+)", out, re.M)
    assert {(int(b), s) for b, s, _ in rows} == {
        (b, s) for b in (1, 3) for s in ("tvm-onednn fp32", "tvm-onednn int8", "onnxruntime")
    }
    assert all(float(ms) > 0 for _, _, ms in rows)
    assert re.search(r"oneDNN ISA \w+", out)
    diffs = [float(d) for d in re.findall(r"max \|tvm-onednn fp32 - onnxruntime\| = (\S+)", out)]
    assert len(diffs) == 2 and max(diffs) < 1e-3  # logits up to ~20
    assert "batch 1 and the first item of the larger batch agree: yes" in out
