"""The Fréchet distance against closed forms for Gaussians with known means and covariances."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import ortho_group

from splitsde.apps.examples.frechet import feature_statistics, frechet_distance


def test_one_dimensional_closed_form():
    # d^2 = (m1 - m2)^2 + (s1 - s2)^2 in one dimension
    got = frechet_distance([0.3], [[4.0]], [-1.2], [[0.25]])
    assert got == pytest.approx((0.3 + 1.2) ** 2 + (2.0 - 0.5) ** 2, rel=1e-12)


def test_commuting_covariances_closed_form():
    rng = np.random.default_rng(1)
    m1, m2 = rng.normal(size=6), rng.normal(size=6)
    a, b = rng.uniform(0.1, 3.0, 6), rng.uniform(0.1, 3.0, 6)
    want = np.sum((m1 - m2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(m1, np.diag(a), m2, np.diag(b)) == pytest.approx(want, rel=1e-10)
    # rotating both Gaussians by the same orthogonal matrix changes nothing, and makes the
    # covariances non-diagonal (sqrtm of a full product)
    R = ortho_group.rvs(6, random_state=2)
    got = frechet_distance(R @ m1, R @ np.diag(a) @ R.T, R @ m2, R @ np.diag(b) @ R.T)
    assert got == pytest.approx(want, rel=1e-9)


def test_non_commuting_two_by_two_closed_form():
    # for 2x2 SPD matrices tr (C1 C2)^{1/2} = sqrt(tr(C1 C2) + 2 sqrt(det C1 det C2)): the
    # eigenvalues l1, l2 of C1 C2 are positive and (sqrt l1 + sqrt l2)^2 = l1 + l2 + 2 sqrt(l1 l2)
    C1 = np.array([[2.0, 0.7], [0.7, 0.5]])
    C2 = np.array([[0.3, -0.2], [-0.2, 1.7]])
    m1, m2 = np.array([1.0, -2.0]), np.array([0.5, 0.25])
    tr_root = math.sqrt(np.trace(C1 @ C2) + 2 * math.sqrt(np.linalg.det(C1) * np.linalg.det(C2)))
    want = np.sum((m1 - m2) ** 2) + np.trace(C1) + np.trace(C2) - 2 * tr_root
    assert not np.allclose(C1 @ C2, C2 @ C1)
    assert frechet_distance(m1, C1, m2, C2) == pytest.approx(want, rel=1e-12)
    assert frechet_distance(m2, C2, m1, C1) == pytest.approx(want, rel=1e-12)


def test_identical_gaussians_have_zero_distance():
    rng = np.random.default_rng(3)
    A = rng.normal(size=(5, 5))
    C = A @ A.T + 0.1 * np.eye(5)
    m = rng.normal(size=5)
    assert abs(frechet_distance(m, C, m, C)) < 1e-10


def test_singular_covariances_closed_form():
    # rank-deficient covariances (more feature dimensions than samples look like this):
    # C1 C2 = 0 gives d^2 = tr C1 + tr C2; C1 = e1 e1^T, C2 = u u^T with u = (1, 1)/sqrt(2)
    # has tr (C1 C2)^{1/2} = sqrt(tr(C1 C2)) = sqrt(1/2) (the 2x2 formula with det = 0)
    got = frechet_distance([0, 0], np.diag([1.0, 0]), [0, 0], np.diag([0, 1.0]))
    assert got == pytest.approx(2.0, abs=1e-12)
    C1, C2 = np.diag([1.0, 0.0]), np.full((2, 2), 0.5)
    want = 1.0 + 1.0 - 2 * math.sqrt(0.5)
    assert frechet_distance([1, 0], C1, [0, 0], C2) == pytest.approx(1.0 + want, abs=1e-6)


def test_unusable_root_falls_back_to_the_offset(monkeypatch):
    # the first square root is unusable (as for numerically singular covariances): the
    # distance is recomputed with offset * I added to both covariances, the traces unchanged
    import scipy.linalg

    real_sqrtm = scipy.linalg.sqrtm
    calls = []

    def flaky(m):
        calls.append(m)
        return np.full_like(m, np.nan) if len(calls) == 1 else real_sqrtm(m)

    monkeypatch.setattr(scipy.linalg, "sqrtm", flaky)
    a, b, delta = np.array([1.0, 2.0]), np.array([0.5, 3.0]), 1e-3
    got = frechet_distance([0, 0], np.diag(a), [0, 0], np.diag(b), offset=delta)
    want = np.sum(a + b) - 2 * np.sum(np.sqrt((a + delta) * (b + delta)))
    assert len(calls) == 2
    assert got == pytest.approx(want, rel=1e-12)
    monkeypatch.setattr(scipy.linalg, "sqrtm", lambda m: np.full_like(m, np.nan))
    with pytest.raises(ValueError, match="not real and finite"):
        frechet_distance([0, 0], np.diag(a), [0, 0], np.diag(b))


def test_feature_statistics_are_mean_and_unbiased_covariance():
    rng = np.random.default_rng(4)
    f = rng.normal(size=(50, 3))
    mean, cov = feature_statistics(f)
    np.testing.assert_allclose(mean, f.mean(0), rtol=1e-14)
    centred = f - f.mean(0)
    np.testing.assert_allclose(cov, centred.T @ centred / 49, rtol=1e-12)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (([0, 0], np.eye(2), [0, 0, 0], np.eye(3)), "equal length"),
        (([0, 0], np.eye(3), [0, 0], np.eye(2)), "shape"),
        (([0, 0], np.array([[1.0, 0.5], [0.0, 1.0]]), [0, 0], np.eye(2)), "not symmetric"),
        (([0, np.nan], np.eye(2), [0, 0], np.eye(2)), "non-finite"),
    ],
)
def test_bad_input_is_named(args, match):
    with pytest.raises(ValueError, match=match):
        frechet_distance(*args)


def test_feature_statistics_rejects_bad_input():
    with pytest.raises(ValueError, match="at least 2"):
        feature_statistics(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="non-finite"):
        feature_statistics(np.array([[0.0, np.inf], [1.0, 2.0]]))
