"""Conformance suite (issue 10): the reference worker and the session summary.

Run: ``.venv/bin/python -m pytest tests/conformance`` (add ``-k`` to select cases, e.g.
``-k "test_conv or gemm"``). The summary at the end counts skip reasons (what TVM itself
cannot do), groups failures by stage and first error line, and lists int8 cosines and
the slowest steps. ``CONFORMANCE_REPORT=<path>`` also writes the raw records as JSON;
``CONFORMANCE_WORKERS=0`` computes the default-pipeline references in this process.
"""

import collections
import json
import os
import re

from . import helpers as h


def _group_key(error: str) -> str:
    """The error line with numbers, names in quotes and shapes blurred, to group by cause."""
    key = re.sub(r"\d+(\.\d+)?(e[-+]?\d+)?", "N", error)
    key = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", key)
    return key[:160]


def pytest_collection_finish(session):
    """Queue the work the worker process shares, in the order the tests need it."""
    from . import test_light_models, test_onnx_node

    jobs = []
    for item in session.items:
        callspec = getattr(item, "callspec", None)
        if callspec is None:
            continue
        name = callspec.params.get("name")
        if item.originalname == "test_light_int8":
            jobs.append((("light-int8", name), test_light_models.int8_outputs, name))
        elif item.module is test_onnx_node:
            frozen = item.originalname.endswith("_frozen")
            jobs.append((("default", name, frozen), h.default_verdict, name, frozen))
    # Light int8 builds first: this process starts with the light fp32 builds.
    jobs.sort(key=lambda job: job[0][0] != "light-int8")
    unique = list({job[0]: job for job in jobs}.values())
    h.start_worker(unique)


def pytest_sessionfinish(session, exitstatus):
    h.stop_worker()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not (h.RESULTS or h.SKIPS or h.COSINES):
        return
    tr = terminalreporter
    tr.section("conformance summary")
    reasons = collections.Counter(re.sub(r":.*", "", r) for r in h.SKIPS.values())
    tr.write_line(f"skipped (TVM itself cannot do it): {len(h.SKIPS)}")
    for reason, n in reasons.most_common():
        tr.write_line(f"  {n:4d}  {reason}")
    tr.write_line(f"failures: {len(h.RESULTS)}")
    groups = collections.defaultdict(list)
    for test, rec in h.RESULTS.items():
        groups[(rec["stage"], _group_key(rec["error"]))].append(test)
    for (stage, _), tests in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        example = h.RESULTS[tests[0]]["error"]
        tr.write_line(f"  [{stage}] x{len(tests)}: {example}")
        tr.write_line("      " + ", ".join(t.split("[", 1)[1].rstrip("]") for t in sorted(tests)))
    if h.COSINES:
        values = sorted(h.COSINES.values())
        tr.write_line(
            f"int8 cosine vs expected ({len(values)} cases): min {values[0]:.6f}, "
            f"median {values[len(values) // 2]:.6f}, max {values[-1]:.6f}"
        )
        quantized = {k: v for k, v in h.COSINES.items() if h.INT8_LAYERS.get(k)}
        low = [f"{k}={v:.6f}" for k, v in sorted(quantized.items(), key=lambda kv: kv[1])[:10]]
        tr.write_line("  lowest with int8 layers: " + ", ".join(low))
        none = sorted(k for k in h.COSINES if h.INT8_LAYERS.get(k) == 0)
        tr.write_line(
            f"  {len(h.COSINES) - len(none)} of them have int8 weights; "
            f"{len(none)} quantize to no int8 layer (weights are graph inputs, so the model "
            "stays float32 and its cosine says nothing)"
        )
    for key, err in sorted(h.LOGIT_ERRORS.items()):
        tr.write_line(
            f"  {key}: int8 layers {h.INT8_LAYERS.get(key)}, cosine {h.COSINES[key]:.6f}, "
            f"logits max relative error vs fp32 {err:.3g}"
        )
    if h.OFFLOADED:
        used = sum(1 for v in h.OFFLOADED.values() if v)
        tr.write_line(
            f"passing fp32 cases with at least one oneDNN region: {used} of {len(h.OFFLOADED)}"
        )
    if h.TIMINGS:
        slow = sorted(h.TIMINGS.items(), key=lambda kv: -kv[1])[:8]
        tr.write_line("slowest steps: " + ", ".join(f"{k} {v:.1f}s" for k, v in slow))
    if h.CPU_TIMES:
        tr.write_line(
            "light models (wall / CPU s): "
            + ", ".join(f"{k} {h.TIMINGS.get(k, 0):.0f}/{v:.0f}" for k, v in sorted(h.CPU_TIMES.items()))
        )
    path = os.environ.get("CONFORMANCE_REPORT")
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(
                {"failures": h.RESULTS, "skips": h.SKIPS, "cosines": h.COSINES,
                 "int8_layers": h.INT8_LAYERS, "logit_errors": h.LOGIT_ERRORS,
                 "offloaded_regions": h.OFFLOADED, "timings": h.TIMINGS,
                 "cpu_times": h.CPU_TIMES},
                f, indent=1, sort_keys=True,
            )
