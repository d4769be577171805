"""A lower bound on epsilon from a distinguishing test's scores, with exact binomial confidence.

(epsilon, delta)-DP implies ``TPR <= e^eps FPR + delta`` and ``TNR <= e^eps FNR + delta`` for every test
(Kairouz, Oh and Viswanath, 2015, "The Composition Theorem for Differential Privacy"); with
Clopper-Pearson bounds on the four rates, a threshold test on scores of releases with and without a
canary gives, at the stated confidence, an epsilon the mechanism run must at least have (Jagielski,
Ullman and Oprea, 2020, arXiv:2006.07709). The threshold is chosen on one half of the scores and the
bound computed on the other, so choosing it does not bias the bound. Pure numpy/scipy; used by
``governance.audit.dp_audit``.
"""

from __future__ import annotations

import math

import numpy as np


def clopper_pearson(successes: int, trials: int, alpha: float) -> tuple[float, float]:
    """Exact one-sided-at-``alpha`` lower and upper bounds on a binomial proportion."""
    from scipy.stats import beta

    lower = 0.0 if successes == 0 else float(beta.ppf(alpha, successes, trials - successes + 1))
    upper = 1.0 if successes == trials else float(beta.ppf(1 - alpha, successes + 1, trials - successes))
    return lower, upper


def _epsilon_at(
    present: np.ndarray, absent: np.ndarray, threshold: float, delta: float, alpha: float
) -> float:
    """max over both inequalities of DP at ``threshold``, with Clopper-Pearson bounds (alpha each)."""
    n1, n0 = present.size, absent.size
    tp, fp = int((present >= threshold).sum()), int((absent >= threshold).sum())
    tpr_lo, _ = clopper_pearson(tp, n1, alpha)
    _, fpr_hi = clopper_pearson(fp, n0, alpha)
    tnr_lo, _ = clopper_pearson(n0 - fp, n0, alpha)
    _, fnr_hi = clopper_pearson(n1 - tp, n1, alpha)
    bounds = [0.0]
    if tpr_lo > delta:
        bounds.append(math.log((tpr_lo - delta) / fpr_hi))
    if tnr_lo > delta:
        bounds.append(math.log((tnr_lo - delta) / fnr_hi))
    return max(bounds)


def _pick_threshold(present: np.ndarray, absent: np.ndarray, delta: float) -> float:
    """The threshold with the largest point estimate of epsilon (counts smoothed by one), vectorised."""
    candidates = np.unique(np.concatenate([present, absent]))
    tp = present.size - np.searchsorted(np.sort(present), candidates, side="left")
    fp = absent.size - np.searchsorted(np.sort(absent), candidates, side="left")
    tpr, fpr = tp / present.size, (fp + 1) / (absent.size + 1)
    tnr, fnr = (absent.size - fp) / absent.size, (present.size - tp + 1) / (present.size + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        score = np.maximum(np.log(np.maximum(tpr - delta, 0) / fpr), np.log(np.maximum(tnr - delta, 0) / fnr))
    return float(candidates[int(np.nanargmax(np.where(np.isfinite(score), score, -np.inf)))])


def epsilon_lower_bound(
    present: np.ndarray, absent: np.ndarray, *, delta: float, confidence: float = 0.95
) -> tuple[float, float]:
    """(epsilon lower bound, threshold): the threshold picked on the first half of each set of scores,
    the bound computed on the second half; the four proportions share ``1 - confidence`` (Bonferroni)."""
    half1, half0 = present.size // 2, absent.size // 2
    picked = _pick_threshold(present[:half1], absent[:half0], delta)
    alpha = (1 - confidence) / 4
    return _epsilon_at(present[half1:], absent[half0:], picked, delta, alpha), picked
