"""kd_lib.lab.stats: confidence intervals for differences between recipes, checked against SciPy."""
import pytest

from kd_lib.lab.stats import difference, mean_interval, paired_difference, t_quantile

scipy_stats = pytest.importorskip("scipy.stats")

A = [0.950, 0.962, 0.941, 0.955, 0.951]
B = [0.930, 0.944, 0.935, 0.925, 0.940]


@pytest.mark.parametrize("df", [1, 2, 4, 9, 29.5, 200])
@pytest.mark.parametrize("p", [0.9, 0.975, 0.995])
def test_t_quantile_matches_scipy(p, df):
    assert t_quantile(p, df) == pytest.approx(scipy_stats.t.ppf(p, df), rel=1e-9)


@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_paired_interval_matches_scipys_paired_t_test(confidence):
    result = paired_difference(A, B, confidence)
    expected = scipy_stats.ttest_rel(A, B).confidence_interval(confidence)
    assert (result.low, result.high) == pytest.approx((expected.low, expected.high), rel=1e-9)
    assert result.mean == pytest.approx(sum(A) / 5 - sum(B) / 5) and result.paired and result.n == 5


def test_unpaired_interval_matches_scipys_welch_test():
    result = difference(A, B[:4])
    expected = scipy_stats.ttest_ind(A, B[:4], equal_var=False).confidence_interval(0.95)
    assert (result.low, result.high) == pytest.approx((expected.low, expected.high), rel=1e-9)
    assert not result.paired


def test_scaled_and_described_in_points():
    gain = paired_difference(A, B).scaled(100)
    assert gain.describe("points") == "+1.7 points (95% CI +0.6 to +2.8, 5 paired seeds)"
    assert gain.excludes_zero and not paired_difference(A, A[::-1]).excludes_zero


def test_a_negative_scale_keeps_the_interval_ordered():
    loss = paired_difference(A, B).scaled(-1)
    assert loss.low < loss.mean < loss.high


@pytest.mark.parametrize("a, b, message", [
    ([0.9], [0.8], "at least 2 values"),
    ([0.9, float("nan")], [0.8, 0.7], "NaN or inf"),
    ([0.9, 0.8, 0.7], [0.8, 0.7], "same seeds on both sides"),
])
def test_bad_input_is_a_clear_error(a, b, message):
    with pytest.raises(ValueError, match=message):
        paired_difference(a, b)


def test_confidence_must_be_a_probability():
    with pytest.raises(ValueError, match="confidence must be in"):
        paired_difference(A, B, confidence=95)


def test_mean_interval_matches_scipys_one_sample_t_test():
    result = mean_interval(A)
    expected = scipy_stats.ttest_1samp(A, 0.0).confidence_interval(0.95)
    assert (result.low, result.high) == pytest.approx((expected.low, expected.high), rel=1e-9)
    assert result.describe(digits=3).endswith("5 seeds)")
