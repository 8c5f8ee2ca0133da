"""The catalogue's calibration fitters and scores are scikit-learn's, computed by hand: each is tested equal to
scikit-learn's own on random data. They stay by hand because the logistic fit keeps a monotone guard
scikit-learn lacks (a slope under zero becomes the base rate) and the catalogue need not carry scikit-learn and
SciPy for 150 lines; scikit-learn is a development dependency, for these tests."""

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")  # in the dev extra; make test installs it

from catalogue.deciding.calibrators import Isotonic, Logistic, reliability
from catalogue.deciding.open_set import auroc  # noqa: E402


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_isotonic_fit_equals_scikit_learns(seed):
    from sklearn.isotonic import IsotonicRegression

    rng = np.random.default_rng(seed)
    s = rng.uniform(-0.2, 1.0, 400)  # continuous scores: no ties
    y = (rng.uniform(size=400) < 1 / (1 + np.exp(-6 * (s - 0.4)))).astype(float)
    ours = Isotonic().fit(s, y).predict(s)
    theirs = IsotonicRegression(increasing=True).fit_transform(s, y)
    assert np.allclose(ours, theirs, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_logistic_fit_equals_scikit_learns_unpenalised(seed):
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    s = rng.uniform(-0.2, 1.0, 500)
    y = (rng.uniform(size=500) < 1 / (1 + np.exp(-(5 * s - 2)))).astype(int)
    ours = Logistic().fit(s, y)
    theirs = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000).fit(s[:, None], y)
    assert ours.a == pytest.approx(theirs.coef_[0, 0], abs=1e-4)
    assert ours.b == pytest.approx(theirs.intercept_[0], abs=1e-4)
    assert np.allclose(ours.predict(s), theirs.predict_proba(s[:, None])[:, 1], atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_auroc_equals_scikit_learns_with_ties(seed):
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    s = np.round(rng.normal(size=300), 1)  # many ties, counted half by both
    y = rng.uniform(size=300) < 1 / (1 + np.exp(-s))
    assert auroc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_reliability_bins_equal_scikit_learns_calibration_curve():
    from sklearn.calibration import calibration_curve

    rng = np.random.default_rng(3)
    p = rng.uniform(size=1000) * 0.999  # off the bin edges' float ambiguity at exactly k/10
    y = rng.uniform(size=1000) < p
    observed, predicted = calibration_curve(y, p, n_bins=10, strategy="uniform")
    bins = [b for b in reliability(p, y, 10) if b["count"]]
    assert np.allclose([b["observed"] for b in bins], observed, atol=1e-12)
    assert np.allclose([b["predicted"] for b in bins], predicted, atol=1e-12)
