"""Detection metrics computed directly from scores and labels: AUC, the ROC curve, best F1, per-class histograms.

A pixel is flagged when its score is >= the threshold; the labels' non-zero values are anomalies.
"""

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

from ..errors import InputError

FALSE_ALARM_RATES = (0.001, 0.01)
"""The false-alarm rates at which the evaluation reports a detection rate."""
_HISTOGRAM_BINS = 60


def _two_classes(scores, labels, what):
    """(scores as float64, labels as bool, positives, negatives), both classes present (else InputError)."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel() != 0
    positives = int(labels.sum())
    negatives = labels.size - positives
    if positives == 0 or negatives == 0:
        raise InputError(f"The ground truth needs both anomaly and background pixels to {what}.")
    return scores, labels, positives, negatives


def roc_auc(scores, labels):
    """Area under the ROC curve (ties count one half), by the rank-sum (Mann-Whitney) formula."""
    scores, labels, positives, negatives = _two_classes(scores, labels, "compute an AUC")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


@dataclass
class RocCurve:
    """ROC points at every distinct score, highest first, after the (0, 0) start (threshold +inf)."""

    thresholds: np.ndarray
    false_alarm_rate: np.ndarray
    detection_rate: np.ndarray
    true_positives: np.ndarray
    false_positives: np.ndarray

    def detection_at(self, rate):
        """Highest detection rate among thresholds whose false-alarm rate is <= rate."""
        index = int(np.searchsorted(self.false_alarm_rate, rate * (1 + 1e-12), side="right")) - 1
        return float(self.detection_rate[max(index, 0)])

    def corners(self):
        """Indices of the points where the curve changes direction (collinear points dropped)."""
        fp, tp = self.false_positives, self.true_positives
        if fp.size <= 2:
            return np.arange(fp.size)
        turning = np.logical_or(np.diff(fp, 2) != 0, np.diff(tp, 2) != 0)
        return np.nonzero(np.r_[True, turning, True])[0]


def roc_curve(scores, labels):
    """The full ROC curve of scores (1-D) against boolean labels."""
    scores, labels, positives, negatives = _two_classes(scores, labels, "draw a ROC curve")
    order = np.argsort(-scores, kind="mergesort")
    ordered = scores[order]
    ends = np.r_[np.nonzero(np.diff(ordered))[0], ordered.size - 1]  # last position of each distinct score
    true_positives = np.cumsum(labels[order])[ends]
    false_positives = ends + 1 - true_positives
    return RocCurve(
        np.r_[np.inf, ordered[ends]],
        np.r_[0.0, false_positives / negatives],
        np.r_[0.0, true_positives / positives],
        np.r_[0, true_positives],
        np.r_[0, false_positives],
    )


def best_f1(curve, positives):
    """(best F1, its threshold) over the curve's thresholds."""
    tp, fp = curve.true_positives[1:], curve.false_positives[1:]
    f1 = 2 * tp / (tp + fp + positives)
    index = int(np.argmax(f1))
    return float(f1[index]), float(curve.thresholds[1:][index])


def score_histogram(scores, labels):
    """Per-class histograms (fractions of each class per bin), on a log10 axis for positive heavy-tailed scores."""
    low, high = float(np.percentile(scores, 0.1)), float(scores.max())
    logarithmic = low > 0 and high / low > 10  # RX-like heavy tails: a log axis shows background and anomalies
    values = np.log10(np.maximum(scores, low)) if logarithmic else scores  # the few below `low` clip to it anyway
    lo, hi = (math.log10(low), math.log10(high)) if logarithmic else (low, high)
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, _HISTOGRAM_BINS + 1)
    clipped = np.clip(values, lo, hi)
    background = np.histogram(clipped[~labels], edges)[0] / max(1, int((~labels).sum()))
    anomalies = np.histogram(clipped[labels], edges)[0] / max(1, int(labels.sum()))
    return {"edges": edges, "background": background, "anomalies": anomalies, "log": logarithmic}

