"""Calibration collectors: hand-computed values, streaming, filtering, the MXNet contract."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from tvm_onednn.calib import (
    COLLECTORS,
    CalibArray,
    CalibrationCollector,
    CalibrationError,
    EntropyCollector,
    NaiveCollector,
    PercentileCollector,
    as_calib_array,
    make_collector,
    register_collector,
    to_numpy,
)
from tvm_onednn.calib.entropy import kl_divergence_curve, optimal_threshold
from tvm_onednn.calib.percentile import histogram_abs_percentile
from tvm_onednn.calib.histogram import StreamingHistogram

ALL_COLLECTORS = [NaiveCollector, EntropyCollector, PercentileCollector]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def gaussian_with_outliers(rng: np.random.Generator) -> np.ndarray:
    x = rng.standard_normal(400_000).astype(np.float32)
    return np.concatenate([x, np.float32([40.0, -35.0, 38.0])])


# -- reference implementation of MXNet's KL search: literal, one candidate at a time ---------


def reference_kl_curve(hist: np.ndarray, nq: int, mxnet_smoothing: bool = False) -> np.ndarray:
    """Straight transcription of the algorithm (p with outliers, q merged/expanded, smoothed)."""
    hist = np.asarray(hist, dtype=np.float64)
    center = hist.size // 2
    eps = 1e-4
    out = []
    for i in range(nq // 2, center + 1):
        lo, hi = center - i, center + i + 1
        sliced = hist[lo:hi]
        p = sliced.copy()
        p[0] += hist[:lo].sum()
        p[-1] += hist[hi:].sum()
        merged = sliced.size // nq
        q = np.zeros(sliced.size)
        for j in range(nq):
            start = j * merged
            stop = sliced.size if j == nq - 1 else start + merged
            nonzero = np.count_nonzero(sliced[start:stop])
            if nonzero:
                q[start:stop] = sliced[start:stop].sum() / nonzero
        q[sliced == 0] = 0

        def smooth(d: np.ndarray) -> np.ndarray:
            zero = d == 0
            if mxnet_smoothing:  # MXNet also takes eps * zeros / nonzeros off non-empty bins
                return np.where(zero, eps, d - eps * zero.sum() / (~zero).sum())
            return np.where(zero, eps, d)

        ps, qs = smooth(p), smooth(q)
        ps, qs = ps / ps.sum(), qs / qs.sum()
        out.append(float(np.sum(ps * np.log(ps / qs))))
    return np.array(out)


# -- naive --------------------------------------------------------------------------------


def test_naive_is_exact_min_max() -> None:
    col = NaiveCollector()
    col.collect("conv1", "conv2d", np.array([[-1.5, 0.25], [3.0, 2.0]], dtype=np.float32))
    col.collect("relu1", "relu", np.array([0.0, 7.0, 0.5]))
    col.collect("conv1", "conv2d", np.array([-0.5, 4.5]))
    assert col.post_collect() == {"conv1": (-1.5, 4.5), "relu1": (0.0, 7.0)}


def test_naive_streaming_equals_at_once(rng: np.random.Generator) -> None:
    data = rng.normal(0.3, 2.0, size=10_000)
    whole, chunked = NaiveCollector(), NaiveCollector()
    whole.collect("x", "op", data)
    for chunk in np.array_split(data, 7):
        chunked.collect("x", "op", chunk)
    assert chunked.post_collect() == whole.post_collect() == {"x": (data.min(), data.max())}


def test_naive_result_is_plain_floats() -> None:
    col = NaiveCollector()
    col.collect("x", "op", np.array([1, -3], dtype=np.int8))
    (lo, hi), = col.post_collect().values()
    assert (type(lo), type(hi)) == (float, float) and (lo, hi) == (-3.0, 1.0)


class _HasNumpy:  # like tvm.runtime.Tensor / torch.Tensor
    def numpy(self) -> np.ndarray:
        return np.array([-2.0, 5.0])


class _HasAsnumpy:  # like mxnet.nd.NDArray
    def asnumpy(self) -> np.ndarray:
        return np.array([-4.0, 1.0])


class _HasArray:
    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return np.array([-1.0, 9.0])


@pytest.mark.parametrize(
    ("arr", "expected"),
    [(_HasNumpy(), (-2.0, 5.0)), (_HasAsnumpy(), (-4.0, 1.0)), (_HasArray(), (-1.0, 9.0)),
     ([[1.0, -6.0]], (-6.0, 1.0))],
)
def test_collectors_accept_array_likes(arr: object, expected: tuple[float, float]) -> None:
    col = NaiveCollector()
    col.collect("x", "op", arr)
    assert col.post_collect()["x"] == expected


def test_to_numpy_rejects_non_numeric() -> None:
    with pytest.raises(TypeError):
        to_numpy(np.array(["a", "b"]))


@pytest.mark.parametrize("cls", ALL_COLLECTORS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_data_names_the_layer(cls: type, bad: float) -> None:
    col = cls()
    with pytest.raises(CalibrationError, match="'conv7'"):
        col.collect("conv7", "conv2d", np.array([1.0, bad, -1.0]))


@pytest.mark.parametrize("cls", ALL_COLLECTORS)
def test_empty_tensors_are_ignored(cls: type) -> None:
    col = cls()
    col.collect("x", "op", np.zeros((0, 3)))
    assert col.post_collect() == {}


@pytest.mark.parametrize("cls", ALL_COLLECTORS)
def test_all_zero_layer_gives_zero_range(cls: type) -> None:
    col = cls()
    col.collect("dead_relu", "relu", np.zeros(100))
    assert col.post_collect() == {"dead_relu": (0.0, 0.0)}


# -- include_layers -----------------------------------------------------------------------


@pytest.mark.parametrize("cls", ALL_COLLECTORS)
def test_include_layers_filters(cls: type, rng: np.random.Generator) -> None:
    data = rng.standard_normal(1000)
    col = cls(include_layers=["a", "c"])
    for name in "abc":
        col.collect(name, "op", data)
    assert sorted(col.post_collect()) == ["a", "c"]


@pytest.mark.parametrize("cls", ALL_COLLECTORS)
def test_include_layers_none_collects_everything(cls: type) -> None:
    col = cls()
    assert col.include_layers is None
    for name in "abc":
        col.collect(name, "op", np.array([-1.0, 2.0]))
    assert sorted(col.post_collect()) == ["a", "b", "c"]


def test_include_layers_setter_accepts_iterables() -> None:
    col = NaiveCollector()
    col.include_layers = (n for n in ["x", "y", "x"])
    assert col.include_layers == frozenset({"x", "y"})
    assert col.is_included("x") and not col.is_included("z")
    col.include_layers = None
    assert col.is_included("z")


@pytest.mark.parametrize("bad", ["conv1", 3, ["ok", 5]])
def test_include_layers_setter_rejects_bad_values(bad: object) -> None:
    col = NaiveCollector()
    with pytest.raises(TypeError):
        col.include_layers = bad


# -- percentile -----------------------------------------------------------------------------


@pytest.mark.parametrize("num_bins", [2048, 2049])  # zero on an edge / in a centred bin
@pytest.mark.parametrize("percentile", [90.0, 99.0, 99.99])
def test_percentile_of_abs_matches_numpy(
    percentile: float, num_bins: int, rng: np.random.Generator
) -> None:
    data = rng.laplace(1.0, 1.5, size=300_000)  # asymmetric around 0
    col = PercentileCollector(percentile=percentile, num_bins=num_bins)
    col.collect("x", "op", data)
    lo, hi = col.post_collect()["x"]
    bin_width = 2 * np.abs(data).max() / num_bins
    assert lo == -hi
    assert abs(hi - np.percentile(np.abs(data), percentile)) <= bin_width


def test_percentile_sidewise_matches_numpy(rng: np.random.Generator) -> None:
    data = rng.gamma(2.0, 1.0, size=300_000) - 1.0  # skewed: long right tail
    col = PercentileCollector(percentile=99.9, num_bins=2048, symmetric=False)
    col.collect("x", "op", data)
    lo, hi = col.post_collect()["x"]
    bin_width = 2 * np.abs(data).max() / 2048
    assert abs(lo - np.percentile(data, 0.1)) <= bin_width
    assert abs(hi - np.percentile(data, 99.9)) <= bin_width


def test_percentile_nonnegative_layer_is_unsigned(rng: np.random.Generator) -> None:
    data = np.maximum(rng.standard_normal(100_000), 0.0)
    col = PercentileCollector(percentile=99.0)
    col.collect("relu", "relu", data)
    lo, hi = col.post_collect()["relu"]
    assert lo == 0.0
    assert abs(hi - np.percentile(data, 99.0)) <= 2 * data.max() / 2048
    forced = PercentileCollector(percentile=99.0, quantized_dtype="int8")
    forced.collect("relu", "relu", data)
    assert forced.post_collect()["relu"] == (-hi, hi)


def test_percentile_100_is_the_max(rng: np.random.Generator) -> None:
    data = rng.standard_normal(10_000)
    col = PercentileCollector(percentile=100.0)
    col.collect("x", "op", data)
    assert col.post_collect()["x"][1] == pytest.approx(np.abs(data).max())


@pytest.mark.parametrize("percentile", [0.0, -1.0, 100.5])
def test_percentile_rejects_out_of_range(percentile: float) -> None:
    with pytest.raises(ValueError):
        PercentileCollector(percentile=percentile)


# -- streaming histogram ---------------------------------------------------------------------


@pytest.mark.parametrize("num_bins", [2048, 2049])
def test_histogram_growth_is_exact_rebinning(num_bins: int, rng: np.random.Generator) -> None:
    batches = [rng.standard_normal(20_000) * scale for scale in (0.01, 0.05, 1.0, 30.0)]
    hist = StreamingHistogram(num_bins)
    for batch in batches:
        hist.add(batch)
    everything = np.concatenate(batches)
    direct, _ = np.histogram(everything, bins=hist.edges())
    assert hist.total == everything.size == hist.counts.sum()
    # Same edges, so only values within rounding of an edge may land in a neighbour bin.
    assert np.abs(direct - hist.counts).sum() <= 1e-4 * everything.size
    assert hist.counts.size <= hist.capacity
    # The observed range stays covered by at least num_bins bins.
    assert 2 * hist.abs_max / hist.bin_width >= num_bins - 1


def test_histogram_memory_is_bounded_under_huge_growth() -> None:
    hist = StreamingHistogram(101)
    for exponent in range(-6, 7):
        hist.add(np.array([-(10.0**exponent), 10.0**exponent, 0.0]))
    assert hist.counts.size <= hist.capacity == 303
    assert hist.counts.sum() == hist.total == 39
    assert hist.half_range >= 1e6


def test_histogram_keeps_zeros_seen_before_the_grid() -> None:
    hist = StreamingHistogram(11)
    hist.add(np.zeros(5))
    hist.add(np.array([-1.0, 1.0]))
    assert hist.counts[5] == 5 and hist.counts.sum() == 7


# -- entropy -------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_kl_curve_matches_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_bins = int(rng.integers(10, 120)) * 2 + 1
    nq = int(rng.integers(2, 50))
    hist = rng.integers(0, 6, n_bins) * (rng.random(n_bins) < 0.6)  # sparse, with empty ends
    _, divergence = kl_divergence_curve(hist, nq)
    np.testing.assert_allclose(divergence, reference_kl_curve(hist, nq), rtol=1e-9, atol=1e-12)


def test_entropy_gaussian_with_outliers_clips_the_outliers(rng: np.random.Generator) -> None:
    data = gaussian_with_outliers(rng)
    col = EntropyCollector(num_bins=8001, num_quantized_bins=255)
    col.collect("conv", "conv2d", data)
    lo, hi = col.post_collect()["conv"]
    assert lo == -hi
    # The bulk (|x| < ~4 sigma) is kept, the outliers at 35-40 sigma are clipped.
    assert 3.0 < hi < 6.0
    assert hi < 0.2 * np.abs(data).max()


def test_entropy_threshold_matches_mxnet_reference(rng: np.random.Generator) -> None:
    # Smaller than the defaults so that the literal reference runs in a fraction of a second.
    data = gaussian_with_outliers(rng)
    col = EntropyCollector(num_bins=1001, num_quantized_bins=63)
    col.collect("conv", "conv2d", data)
    hist = col.histograms["conv"]
    expected = reference_kl_curve(hist.counts, 63, mxnet_smoothing=True)
    expected_t = (np.argmin(expected) + 63 // 2 + 0.5) * hist.bin_width
    assert col.post_collect()["conv"][1] == pytest.approx(expected_t, abs=hist.bin_width)


def test_entropy_uniform_keeps_the_full_range(rng: np.random.Generator) -> None:
    data = rng.uniform(-3.0, 3.0, size=400_000)
    col = EntropyCollector()
    col.collect("x", "op", data)
    lo, hi = col.post_collect()["x"]
    assert hi == pytest.approx(3.0, rel=0.02) and lo == -hi


def test_entropy_threshold_never_exceeds_the_observed_max(rng: np.random.Generator) -> None:
    col = EntropyCollector(num_bins=1001, signed_threshold="pooled")
    col.collect("x", "op", np.append(rng.uniform(-1.0, 1.0, size=100_000), [-1.0, 1.0]))
    col.collect("x", "op", np.repeat([-2.999, 2.999], 10_000))  # grid grows to +-3.0
    hist = col.histograms["x"]
    assert hist.half_range == pytest.approx(3.0)
    # The best edge is the outer one (3.0), but no data lies beyond 2.999.
    assert col.post_collect()["x"] == (-2.999, 2.999)


def test_entropy_nonnegative_layer_uses_uint8_levels(rng: np.random.Generator) -> None:
    data = np.maximum(gaussian_with_outliers(rng), 0.0)
    col = EntropyCollector(unsigned_percentile=None)  # KL for unsigned layers too (MXNet)
    col.collect("relu", "relu", data)
    lo, hi = col.post_collect()["relu"]
    hist = col.histograms["relu"]
    assert lo == 0.0
    assert hi == pytest.approx(optimal_threshold(hist.counts, hist.bin_width, 511)[0])
    forced = EntropyCollector(quantized_dtype="int8")
    forced.collect("relu", "relu", data)
    t = optimal_threshold(hist.counts, hist.bin_width, 255)[0]
    assert forced.post_collect()["relu"] == pytest.approx((-t, t))


def test_entropy_nonnegative_layer_takes_a_percentile_by_default(
    rng: np.random.Generator,
) -> None:
    data = np.maximum(gaussian_with_outliers(rng), 0.0)
    col = EntropyCollector()
    col.collect("relu", "relu", data)
    col.collect("conv", "conv2d", gaussian_with_outliers(rng))
    ranges = col.post_collect()
    hist = col.histograms["relu"]
    assert ranges["relu"] == (0.0, pytest.approx(histogram_abs_percentile(hist, 99.99)))
    assert abs(ranges["relu"][1] - np.percentile(data, 99.99)) <= 2 * hist.bin_width
    # A signed layer keeps the KL threshold.
    signed = col.histograms["conv"]
    t = optimal_threshold(signed.counts, signed.bin_width, 255)[0]
    assert ranges["conv"] == pytest.approx((-t, t))
    # int8 forces a signed range: the KL threshold again.
    forced = EntropyCollector(quantized_dtype="int8")
    forced.collect("relu", "relu", data)
    t = optimal_threshold(hist.counts, hist.bin_width, 255)[0]
    assert forced.post_collect()["relu"] == pytest.approx((-t, t))


def test_entropy_streaming_same_grid_is_identical(rng: np.random.Generator) -> None:
    data = gaussian_with_outliers(rng)
    data = np.concatenate([data[-3:], data[:-3]])  # first chunk holds the max: no regrid
    whole, chunked = (EntropyCollector(signed_threshold="pooled") for _ in range(2))
    whole.collect("x", "op", data)
    for chunk in np.array_split(data, 9):
        chunked.collect("x", "op", chunk)
    np.testing.assert_array_equal(chunked.histograms["x"].counts, whole.histograms["x"].counts)
    assert chunked.post_collect() == whole.post_collect()


def test_entropy_streaming_with_growing_range_is_close(rng: np.random.Generator) -> None:
    data = gaussian_with_outliers(rng)  # outliers come last: the grid grows
    whole, chunked = (EntropyCollector(signed_threshold="pooled") for _ in range(2))
    whole.collect("x", "op", data)
    for chunk in np.array_split(data, 9):
        chunked.collect("x", "op", chunk)
    assert chunked.histograms["x"].total == whole.histograms["x"].total
    t_whole, t_chunked = whole.post_collect()["x"][1], chunked.post_collect()["x"][1]
    assert t_chunked == pytest.approx(t_whole, rel=0.05)


def test_entropy_signed_threshold_is_the_mean_of_per_batch_thresholds(
    rng: np.random.Generator,
) -> None:
    batches = [rng.normal(0.0, sigma, size=50_000) for sigma in (1.0, 2.0, 4.0)]
    col = EntropyCollector(num_bins=2001)
    for batch in batches:
        col.collect("x", "op", batch)
    expected = []
    for batch in batches:  # each batch's own histogram and KL threshold
        hist = StreamingHistogram(2001)
        hist.add(batch)
        t = optimal_threshold(hist.counts, hist.bin_width, 255)[0]
        expected.append(min(t, np.abs(batch).max()))
    assert col.post_collect()["x"] == pytest.approx((-np.mean(expected), np.mean(expected)))
    # "pooled" (MXNet's): the threshold of the histogram of all batches.
    pooled = EntropyCollector(num_bins=2001, signed_threshold="pooled")
    for batch in batches:
        pooled.collect("x", "op", batch)
    hist = pooled.histograms["x"]
    t = optimal_threshold(hist.dense_counts(), hist.bin_width, 255)[0]
    assert pooled.post_collect()["x"] == pytest.approx((-t, t))


def test_entropy_batch_mean_does_not_grow_with_more_batches(rng: np.random.Generator) -> None:
    """More batches of the same heavy-tailed data widen a pooled histogram's tails, and its
    KL threshold with them; the mean of per-batch thresholds stays put."""
    def thresholds(n_batches: int) -> tuple[float, float]:
        cols = [EntropyCollector(signed_threshold=m) for m in ("batch_mean", "pooled")]
        for _ in range(n_batches):
            batch = rng.standard_t(3, size=20_000)
            for col in cols:
                col.collect("x", "op", batch)
        return tuple(col.post_collect()["x"][1] for col in cols)

    (mean_few, pooled_few), (mean_many, pooled_many) = thresholds(2), thresholds(40)
    assert mean_many == pytest.approx(mean_few, rel=0.15)
    assert pooled_many > 1.2 * pooled_few


def test_entropy_batch_mean_skips_non_negative_batches_of_a_signed_layer() -> None:
    col = EntropyCollector(num_bins=1001)
    col.collect("x", "op", np.linspace(-1.0, 1.0, 10_001))
    col.collect("x", "op", np.linspace(0.0, 0.5, 10_001))  # no negative value: not a KL sample
    only_first = EntropyCollector(num_bins=1001)
    only_first.collect("x", "op", np.linspace(-1.0, 1.0, 10_001))
    assert col.post_collect()["x"] == only_first.post_collect()["x"]


@pytest.mark.parametrize(
    "kwargs",
    [{"num_bins": 8000}, {"num_quantized_bins": 1}, {"signed_threshold": "median"}, {"num_bins": 101, "num_quantized_bins": 101},
     {"quantized_dtype": "int4"}, {"unsigned_percentile": 0.0},
     {"unsigned_percentile": 100.5}, {"unsigned_percentile": True}],
)
def test_entropy_rejects_bad_parameters(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        EntropyCollector(**kwargs)


# -- the collector contract and an MXNet-style user collector ------------------------------


def test_base_class_is_abstract() -> None:
    with pytest.raises(TypeError):
        CalibrationCollector()

    class NoCollect(CalibrationCollector):
        pass

    with pytest.raises(TypeError):
        NoCollect()


# Written as in MXNet 2.0's guide; only the import line changes
# (was: from mxnet.contrib.quantization import *; from mxnet import cpu).
from tvm_onednn.calib import CalibrationCollector as _Base  # noqa: E402
from tvm_onednn.calib import cpu  # noqa: E402


class ExampleNaiveCollector(_Base):
    """Saves layer output min and max values in a dict with layer names as keys.
    The collected min and max values will be directly used as thresholds for quantization.
    """

    def __init__(self, logger=None):
        # (MXNet users often forget super(ExampleNaiveCollector, self).__init__())
        self.logger = logger

    def collect(self, name, op_name, arr):
        """Callback function for collecting min and max values from an NDArray."""
        if name not in self.include_layers:  # include_layers is populated by quantization API
            return
        arr = arr.copyto(cpu()).asnumpy()

        min_range = np.min(arr)
        max_range = np.max(arr)

        if name in self.min_max_dict:  # min_max_dict is by default empty dict
            cur_min_max = self.min_max_dict[name]
            self.min_max_dict[name] = (min(cur_min_max[0], min_range),
                                       max(cur_min_max[1], max_range))
        else:
            self.min_max_dict[name] = (min_range, max_range)

        if self.logger:
            self.logger.debug("Collecting layer %s min_range=%f, max_range=%f"  # noqa: UP031
                              % (name, min_range, max_range))

    def post_collect(self):
        # we're using min_max_dict and don't process any collected statistics so we don't
        # need to override this function, however we are doing this for the sake of this article
        return self.min_max_dict


class WithoutPostCollect(_Base):
    def __init__(self):
        super().__init__()

    def collect(self, name, op_name, arr):
        arr = arr.asnumpy()
        self.min_max_dict[name] = (np.min(arr), np.max(arr))


def run_like_quantizer(collector, batches, calib_layers):
    """What the quantizer does: fill include_layers if unset, feed wrapped tensors."""
    if collector.include_layers is None:
        collector.include_layers = calib_layers
    for batch in batches:
        for name, tensor in batch.items():
            collector.collect(name, name + "_op", as_calib_array(tensor))
    return collector.post_collect()


def test_mxnet_style_collector_without_super_init(caplog: pytest.LogCaptureFixture) -> None:
    collector = ExampleNaiveCollector(logger=logging.getLogger("user"))
    assert collector.include_layers is None and collector.min_max_dict == {}
    batches = [{"conv0": np.array([-1.0, 2.0]), "skip": np.array([100.0])},
               {"conv0": np.array([-3.0, 0.5]), "skip": np.array([-100.0])}]
    with caplog.at_level(logging.DEBUG, logger="user"):
        ranges = run_like_quantizer(collector, batches, ["conv0"])
    assert ranges == {"conv0": (-3.0, 2.0)}
    assert collector.include_layers == frozenset({"conv0"})
    assert [r.getMessage() for r in caplog.records] == [
        "Collecting layer conv0 min_range=-1.000000, max_range=2.000000",
        "Collecting layer conv0 min_range=-3.000000, max_range=0.500000",
    ]


def test_instances_without_super_init_do_not_share_state() -> None:
    a, b = ExampleNaiveCollector(), ExampleNaiveCollector()
    run_like_quantizer(a, [{"x": np.array([1.0, 2.0])}], ["x"])
    assert a.min_max_dict == {"x": (1.0, 2.0)}
    assert b.min_max_dict == {} and b.include_layers is None


def test_default_post_collect_returns_min_max_dict() -> None:
    batches = [{"x": np.array([-2, 3], dtype=np.int32)}]
    ranges = run_like_quantizer(WithoutPostCollect(), batches, None)
    assert ranges == {"x": (-2.0, 3.0)}


def test_calib_array_is_a_readonly_view() -> None:
    base = np.arange(6.0)
    view = as_calib_array(base)
    assert isinstance(view, CalibArray) and np.shares_memory(view, base)
    assert type(view.copyto(cpu()).asnumpy()) is np.ndarray
    with pytest.raises(ValueError):
        view[0] = 1.0


# -- registry --------------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "cls"), [("naive", NaiveCollector), ("entropy", EntropyCollector),
                                           ("percentile", PercentileCollector)])
def test_make_collector(mode: str, cls: type) -> None:
    col = make_collector(mode, include_layers=["a"])
    assert type(col) is cls and col.include_layers == frozenset({"a"})


def test_make_collector_passes_kwargs() -> None:
    col = make_collector("entropy", num_bins=2001, num_quantized_bins=127)
    assert (col.num_bins, col.num_quantized_bins) == (2001, 127)


def test_make_collector_unknown_mode_lists_known_ones() -> None:
    with pytest.raises(ValueError, match="entropy, naive, percentile"):
        make_collector("kl")


def test_register_collector() -> None:
    class Mine(NaiveCollector):
        pass

    register_collector("mine-test", Mine)
    try:
        assert type(make_collector("mine-test")) is Mine
        with pytest.raises(ValueError):
            register_collector("mine-test", Mine)
        with pytest.raises(TypeError):
            register_collector("not-a-collector", dict)
        with pytest.raises(TypeError):
            COLLECTORS["x"] = Mine  # read-only view
    finally:
        from tvm_onednn.calib import registry

        registry._REGISTRY.pop("mine-test", None)
