"""Detection metrics computed directly from scores and labels."""

import numpy as np
from scipy.stats import rankdata

from ..errors import InputError


def roc_auc(scores, labels):
    """Area under the ROC curve (ties count one half), by the rank-sum (Mann-Whitney) formula."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel() != 0
    positives = int(labels.sum())
    negatives = labels.size - positives
    if positives == 0 or negatives == 0:
        raise InputError("The ground truth needs both anomaly and background pixels to compute an AUC.")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))
