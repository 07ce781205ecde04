"""kd_lib.lab.evaluation: fidelity to a teacher, reliability bins, temperature scaling."""
import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax as np_log_softmax

from kd_lib.lab.evaluation import clearly_greater, fidelity, fit_temperature, predictive_kl
from kd_lib.metrics import reliability_bins
from kd_lib.metrics import expected_calibration_error


def numpy_kl(teacher_logits, student_logits):
    log_p = np_log_softmax(np.asarray(teacher_logits, dtype=np.float64), axis=-1)
    log_q = np_log_softmax(np.asarray(student_logits, dtype=np.float64), axis=-1)
    return float((np.exp(log_p) * (log_p - log_q)).sum(-1).mean())


# ----------------------------------------------------------------------------- seed spread
def test_clearly_greater_needs_separate_ranges_and_a_gap_above_the_spread():
    assert clearly_greater([0.95, 0.96, 0.97], [0.90, 0.91, 0.92])
    assert not clearly_greater([0.90, 0.91, 0.92], [0.95, 0.96, 0.97])  # wrong direction
    assert not clearly_greater([0.93, 0.96, 0.99], [0.90, 0.92, 0.94])  # ranges overlap
    # ranges apart, but the gap of the means (0.080) is below the spread (std 0.087)
    assert not clearly_greater([0.90, 0.90, 1.05], [0.85, 0.87, 0.89])


def test_clearly_greater_rejects_too_few_seeds_and_nan():
    with pytest.raises(ValueError, match="at least 2"):
        clearly_greater([1.0], [0.0, 0.1])
    with pytest.raises(ValueError, match="NaN"):
        clearly_greater([1.0, math.nan], [0.0, 0.1])


# ----------------------------------------------------------------------------- fidelity
def test_predictive_kl_matches_a_numpy_reference():
    generator = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(50, 7, generator=generator), 3 * torch.randn(50, 7, generator=generator)
    assert predictive_kl(student, teacher) == pytest.approx(numpy_kl(teacher, student), rel=1e-5)


def test_predictive_kl_is_zero_for_identical_logits_and_ignores_a_shift():
    logits = torch.randn(20, 10)
    assert predictive_kl(logits, logits) == pytest.approx(0.0, abs=1e-6)
    assert predictive_kl(logits + 5.0, logits) == pytest.approx(0.0, abs=1e-5)


def test_fidelity_counts_copied_teacher_mistakes():
    labels = torch.tensor([0, 1, 2, 3])
    teacher = torch.eye(4)[[0, 1, 0, 1]] * 5  # right, right, wrong (says 0), wrong (says 1)
    student = torch.eye(4)[[0, 2, 0, 3]] * 5  # copies the first mistake, gets the second right
    report = fidelity(student, teacher, labels)
    assert report.agreement == pytest.approx(0.5)
    assert report.teacher_errors == 2
    assert report.copied_errors == pytest.approx(0.5)
    assert report.kl == pytest.approx(numpy_kl(teacher, student), rel=1e-5)


def test_fidelity_without_teacher_errors_or_labels_leaves_copied_errors_empty():
    labels = torch.tensor([0, 1])
    teacher = torch.eye(2) * 4
    assert fidelity(teacher, teacher, labels).copied_errors is None
    assert fidelity(teacher, teacher).teacher_errors is None


def test_fidelity_rejects_mismatched_shapes_and_nan():
    with pytest.raises(ValueError, match="shape"):
        fidelity(torch.randn(4, 3), torch.randn(5, 3))
    with pytest.raises(ValueError, match="NaN"):
        predictive_kl(torch.full((2, 3), math.nan), torch.randn(2, 3))
    with pytest.raises(ValueError, match="labels"):
        fidelity(torch.randn(4, 3), torch.randn(4, 3), torch.zeros(3, dtype=torch.long))


# ----------------------------------------------------------------------------- calibration
def test_reliability_bins_on_a_hand_built_example():
    # confidences 0.5 (right), 0.5 (wrong), 0.9 (right): two bins of width 0.5
    probabilities = torch.tensor([[0.5, 0.3, 0.2], [0.5, 0.3, 0.2], [0.9, 0.05, 0.05]])
    labels = torch.tensor([0, 1, 0])
    bins = reliability_bins(probabilities.log(), labels, num_bins=2)
    assert bins.edges.tolist() == [0.0, 0.5, 1.0]
    assert bins.counts.tolist() == [0, 3]  # 0.5 falls in [0.5, 1]
    assert math.isnan(bins.accuracy[0]) and math.isnan(bins.confidence[0])
    assert bins.accuracy[1].item() == pytest.approx(2 / 3)
    assert bins.confidence[1].item() == pytest.approx((0.5 + 0.5 + 0.9) / 3, rel=1e-6)
    assert bins.ece == pytest.approx(abs(2 / 3 - 1.9 / 3), rel=1e-5)


def test_reliability_bins_ece_equals_the_metrics_ece():
    generator = torch.Generator().manual_seed(1)
    logits = 3 * torch.randn(500, 10, generator=generator)
    labels = torch.randint(0, 10, (500,), generator=generator)
    for num_bins in (1, 5, 15):
        bins = reliability_bins(logits, labels, num_bins)
        assert int(bins.counts.sum()) == 500
        assert bins.ece == pytest.approx(expected_calibration_error(logits, labels, num_bins), abs=1e-6)


def test_reliability_bins_rejects_bad_input():
    with pytest.raises(ValueError, match="num_bins"):
        reliability_bins(torch.randn(3, 2), torch.zeros(3, dtype=torch.long), num_bins=0)
    with pytest.raises(ValueError, match="labels"):
        reliability_bins(torch.randn(3, 2), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="no examples"):
        reliability_bins(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="class indices"):
        reliability_bins(torch.randn(3, 2), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="class indices"):
        fit_temperature(torch.randn(3, 2), torch.tensor([0.0, 1.0, 1.0]))


def sample_labels(logits, seed):
    generator = torch.Generator().manual_seed(seed)
    return torch.multinomial(torch.softmax(logits, -1), 1, generator=generator).squeeze(1)


def test_fit_temperature_recovers_a_known_overconfidence():
    true_logits = 2 * torch.randn(20000, 10, generator=torch.Generator().manual_seed(2))
    labels = sample_labels(true_logits, 3)  # labels drawn from softmax(true_logits): calibrated
    assert fit_temperature(3.0 * true_logits, labels) == pytest.approx(3.0, rel=0.05)
    assert fit_temperature(0.5 * true_logits, labels) == pytest.approx(0.5, rel=0.05)


def test_fit_temperature_matches_a_scipy_minimiser_of_the_nll():
    logits = 4 * torch.randn(300, 5, generator=torch.Generator().manual_seed(4))
    labels = torch.randint(0, 5, (300,), generator=torch.Generator().manual_seed(5))
    z, y = logits.double().numpy(), labels.numpy()

    def nll(log_t):
        log_probs = np_log_softmax(z / np.exp(log_t), axis=-1)
        return -log_probs[np.arange(len(y)), y].mean()

    reference = math.exp(minimize_scalar(nll, bounds=(math.log(0.05), math.log(20)), method="bounded",
                                         options={"xatol": 1e-8}).x)
    assert fit_temperature(logits, labels) == pytest.approx(reference, rel=1e-3)


def test_fit_temperature_lowers_the_nll_and_keeps_the_predictions():
    true_logits = torch.randn(2000, 10, generator=torch.Generator().manual_seed(6))
    labels = sample_labels(true_logits, 7)
    logits = 5 * true_logits
    temperature = fit_temperature(logits, labels)
    nll = lambda z: float(torch.nn.functional.cross_entropy(z, labels))  # noqa: E731
    assert nll(logits / temperature) < nll(logits)
    assert torch.equal((logits / temperature).argmax(-1), logits.argmax(-1))


def test_fit_temperature_clamps_when_every_example_is_right():
    logits = torch.eye(4).repeat(5, 1) * 10
    labels = torch.arange(4).repeat(5)
    assert fit_temperature(logits, labels, t_min=0.1) == 0.1


def test_fit_temperature_rejects_bad_input():
    with pytest.raises(ValueError, match="t_min"):
        fit_temperature(torch.randn(3, 2), torch.zeros(3, dtype=torch.long), t_min=0)
    with pytest.raises(ValueError, match="NaN"):
        fit_temperature(torch.full((3, 2), math.inf), torch.zeros(3, dtype=torch.long))
