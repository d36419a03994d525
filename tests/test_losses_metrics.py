"""Losses and evaluation metrics against independent scipy / numpy computations."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from apm.models import APM, APMConfig, APMOutput
from apm.training.losses import LOSSES, distillation_kl, get_loss
from apm.votes import metrics

N = 64


def cdf_distance_loop(true: np.ndarray, pred: np.ndarray) -> float:
    """sqrt(mean_k (CDF_t(k) - CDF_p(k))^2) written out bin by bin, averaged over rows."""
    total = 0.0
    for t, p in zip(true, pred):
        cdf_t = cdf_p = squares = 0.0
        for k in range(10):
            cdf_t += t[k]
            cdf_p += p[k]
            squares += (cdf_t - cdf_p) ** 2
        total += math.sqrt(squares / 10)
    return total / len(true)


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Float64 logits and targets; a quarter of the target bins are empty, as in real votes."""
    rng = np.random.default_rng(1)
    logits = torch.tensor(rng.normal(0, 2, (N, 10)), requires_grad=True)
    votes = rng.integers(0, 40, (N, 10)) * (rng.random((N, 10)) > 0.25)
    votes[:, 4] += 1  # no empty histogram
    return logits, torch.tensor(votes / votes.sum(1, keepdims=True))


def test_registry():
    assert sorted(LOSSES) == ["cdloss", "euclidean", "kl", "mse_mean"]
    assert {name: loss.head for name, loss in LOSSES.items()}["mse_mean"] == "mean"
    with pytest.raises(ValueError, match="unknown loss 'emd'; choose one of cdloss"):
        get_loss("emd")


def test_distribution_losses_match_independent_computations(batch):
    logits, target = batch
    pred, true = logits.softmax(-1).detach().numpy(), target.numpy()
    expected = {
        "kl": np.mean([stats.entropy(t, p) for t, p in zip(true, pred)]),
        "cdloss": cdf_distance_loop(true, pred),
        "euclidean": np.mean(np.linalg.norm(true - pred, axis=1)),
    }
    for name, value in expected.items():
        assert get_loss(name)(logits, target).item() == pytest.approx(value, rel=1e-9), name


def test_mse_mean_matches_numpy(batch):
    _, target = batch
    mean = torch.tensor(np.random.default_rng(2).uniform(2, 8, N), requires_grad=True)
    true_mean = target.numpy() @ np.arange(1, 11)
    assert get_loss("mse_mean")(mean, target).item() == pytest.approx(np.mean((mean.detach().numpy()
                                                                              - true_mean) ** 2))


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradients_flow_through_a_model(name):
    loss = get_loss(name)
    model = APM(APMConfig(backbone="resnet18", head=loss.head))
    target = torch.softmax(torch.randn(2, 10), -1)
    loss.on_output(model(torch.randn(2, 3, 64, 64)), target).backward()
    grads = [p.grad for p in model.aesthetic_head.parameters()] + [model.backbone.conv1.weight.grad]
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", ["kl", "cdloss", "euclidean"])
def test_perfect_prediction_has_zero_loss_and_finite_gradient(name):
    """The target is the prediction bit for bit, where the derivative of sqrt is infinite."""
    logits = torch.randn(3, 10, dtype=torch.float64, requires_grad=True)
    value = get_loss(name)(logits, logits.softmax(-1).detach())
    value.backward()
    assert value.item() == pytest.approx(0, abs=1e-6)
    assert torch.isfinite(logits.grad).all()


def test_loss_for_another_head_is_refused():
    output = APMOutput(semantic_logits=torch.zeros(1, 1000), mean=torch.ones(1))
    with pytest.raises(ValueError, match="'distribution' head was given the output of another head"):
        get_loss("kl").on_output(output, torch.full((1, 10), 0.1))


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_distillation_kl(temperature):
    student = torch.randn(N, 1000, dtype=torch.float64, requires_grad=True)
    teacher_logits = torch.randn(N, 1000, dtype=torch.float64)
    soft_teacher = torch.softmax(teacher_logits / temperature, -1)
    soft_student = torch.softmax(student.detach() / temperature, -1)
    expected = temperature**2 * np.mean([stats.entropy(t, s) for t, s in zip(soft_teacher, soft_student)])

    from_logits = distillation_kl(student, teacher_logits, temperature, teacher_is_logits=True)
    assert from_logits.item() == pytest.approx(expected, rel=1e-9)
    assert distillation_kl(student, soft_teacher, temperature).item() == pytest.approx(expected, rel=1e-9)
    log_probs = torch.log_softmax(teacher_logits, -1)  # stored T=1 probabilities, softened as documented
    assert distillation_kl(student, log_probs, temperature, teacher_is_logits=True).item() == \
        pytest.approx(expected, rel=1e-9)
    from_logits.backward()
    assert torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0

    same = student.detach()
    zero = pytest.approx(0, abs=1e-12)
    assert distillation_kl(same, same, temperature, teacher_is_logits=True).item() == zero
    assert distillation_kl(same, torch.softmax(same / temperature, -1), temperature).item() == zero
    assert expected > 0.1


# --- metrics -------------------------------------------------------------------------------

@pytest.fixture
def predictions() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vote counts, predicted distributions correlated with them, and categories (some None)."""
    rng = np.random.default_rng(3)
    votes = rng.integers(0, 30, (N, 10)) * (rng.random((N, 10)) > 0.2)
    votes[:, 5] += 1
    pred = rng.dirichlet(np.ones(10), N) + 2 * votes / votes.sum(1, keepdims=True)
    categories = rng.choice(np.array(["bird", "beach", None], dtype=object), N)
    return votes, pred / pred.sum(1, keepdims=True), categories


def reference_metrics(votes: np.ndarray, pred: np.ndarray | None, pred_mean: np.ndarray) -> dict:
    true = votes / votes.sum(1, keepdims=True)
    true_mean = np.array([sum((k + 1) * v for k, v in enumerate(row)) / row.sum() for row in votes])
    return {
        "kldiv": None if pred is None else np.mean([stats.entropy(t, p) for t, p in zip(true, pred)]),
        "cdloss": None if pred is None else cdf_distance_loop(true, pred),
        "mse": np.mean((true_mean - pred_mean) ** 2),
        "spearman": stats.spearmanr(true_mean, pred_mean).statistic,
        "pearson": stats.pearsonr(true_mean, pred_mean).statistic,
        "accuracy": np.mean([(t >= 5) == (p >= 5) for t, p in zip(true_mean, pred_mean)]),
    }


def assert_row(row: dict, expected: dict) -> None:
    for name, value in expected.items():
        if value is None:
            assert row[name] is None, name
        else:
            assert row[name] == pytest.approx(value, rel=1e-9), name


def test_evaluate_matches_scipy_overall_and_per_category(predictions):
    votes, pred, categories = predictions
    rows = metrics.evaluate(votes, torch.tensor(pred), categories)
    sizes = {name: int(np.sum(categories == name)) for name in ("beach", "bird")}
    assert [(r["category"], r["n_images"]) for r in rows] == [("overall", N), *sizes.items()]
    assert all(tuple(r) == metrics.EVALUATION_COLUMNS for r in rows)
    pred_mean = pred @ np.arange(1, 11)
    assert_row(rows[0], reference_metrics(votes, pred, pred_mean))
    for row in rows[1:]:
        rows_of = categories == row["category"]
        assert_row(row, reference_metrics(votes[rows_of], pred[rows_of], pred_mean[rows_of]))
    assert rows[0]["spearman"] > 0.3  # the predictions were built to correlate


def test_mean_baseline_has_no_distribution_metrics(predictions):
    votes, _, _ = predictions
    pred_mean = np.random.default_rng(4).uniform(3, 7, N)
    rows = metrics.evaluate(votes / votes.sum(1, keepdims=True), pred_mean=pred_mean, categories=["x"] * N)
    expected = reference_metrics(votes, None, pred_mean)
    assert_row(rows[0], expected)
    assert_row(rows[1], expected)


def test_mean_of_exactly_five_is_high_and_one_image_has_no_correlation():
    votes = np.array([[0, 0, 0, 0, 3, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0, 0, 0, 2]])  # means 5 and 7
    rows = metrics.evaluate(votes, pred_mean=[4.9, 5.0], categories=["a", "b"])
    assert rows[0]["accuracy"] == 0.5
    assert rows[0]["pearson"] == pytest.approx(1.0)
    assert math.isnan(rows[1]["spearman"]) and math.isnan(rows[1]["pearson"])


def test_kldiv_stays_finite_where_a_predicted_bin_underflowed():
    true = np.array([[0.5, 0.5] + [0] * 8])
    pred = np.array([[1.0] + [0] * 9])  # a float32 softmax can round a bin to exactly 0
    kldiv = metrics.evaluate(true, pred)[0]["kldiv"]
    assert kldiv == pytest.approx(0.5 * np.log(0.5) + 0.5 * np.log(0.5 / metrics.KL_PRED_FLOOR))


def test_evaluate_rejects_bad_input(predictions):
    votes, pred, _ = predictions
    with pytest.raises(ValueError, match="exactly one of pred_dist"):
        metrics.evaluate(votes)
    with pytest.raises(ValueError, match=r"true_dist must have shape \(N, 10\)"):
        metrics.evaluate(votes[:, :9], pred)
    with pytest.raises(ValueError, match="pred_dist row 3 is not a histogram"):
        metrics.evaluate(votes, np.where(np.arange(N)[:, None] == 3, -pred, pred))
    with pytest.raises(ValueError, match=f"{N} true distributions but 3 predictions"):
        metrics.evaluate(votes, pred_mean=[5, 5, 5])
