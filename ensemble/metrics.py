"""Frame-level detection metrics against ground-truth labels.

Higher score = more anomalous. The headline is the ROC AUC of raw scores over
all frames of all clips pooled ("micro"): what a deployed detector, which
never sees a clip's future, achieves. Per-clip min-max normalisation (common
in papers) and the mean of per-clip AUCs ("macro") are reported beside it,
labelled as such.
"""

from __future__ import annotations

import numpy as np

from cuboid_ad.core.arrays import runs
from cuboid_ad.ensemble.events import Event


def equal_error_rate(labels: np.ndarray, scores: np.ndarray) -> float:
    """The rate at which false alarms and misses are equal, interpolated on the ROC curve."""
    from sklearn.metrics import roc_curve  # here, not at the top: scoring imports this module, and sklearn takes a second

    fpr, tpr, _ = roc_curve(labels, scores)
    fnr = 1 - tpr
    i = int(np.flatnonzero(fnr <= fpr)[0]) if (fnr <= fpr).any() else len(fpr) - 1
    if i == 0:
        return float(fpr[0])
    # the crossing lies between points i-1 and i
    d0, d1 = fnr[i - 1] - fpr[i - 1], fnr[i] - fpr[i]
    t = d0 / (d0 - d1) if d0 != d1 else 0.0
    return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))


def minmax(x: np.ndarray) -> np.ndarray:
    span = x.max() - x.min()
    return (x - x.min()) / span if span > 0 else np.zeros_like(x, dtype=np.float64)


def regularity(score: np.ndarray) -> np.ndarray:
    """Chong & Tay's regularity score of one clip: s(t) = 1 - (e(t) - min e) / max e, 1 for its most regular frame.

    e is the frame score shifted to start at 0 (z-scores can be negative), so s = 1 - minmax(score):
    the per-clip min-max AUC of :func:`frame_metrics` is the AUC of 1 - s. It needs the whole clip's
    scores, so it cannot be computed online (``watch``).
    """
    return 1.0 - minmax(np.asarray(score, dtype=np.float64))


def frame_metrics(clips: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict:
    """clips: id -> (labels bool (n,), scores (n,), flagged bool (n,)). Returns a JSON-ready dict.

    ``auc_pooled_minmax_per_clip`` normalises each clip's scores to [0, 1] before pooling, as many
    papers do; it is the AUC of 1 - :func:`regularity`. It cannot be had online.
    """
    from scipy.ndimage import gaussian_filter1d
    from sklearn.metrics import average_precision_score, roc_auc_score

    labels = np.concatenate([c[0] for c in clips.values()]).astype(bool)
    scores = np.concatenate([c[1] for c in clips.values()]).astype(np.float64)
    flagged = np.concatenate([c[2] for c in clips.values()]).astype(bool)
    normed = np.concatenate([minmax(c[1].astype(np.float64)) for c in clips.values()])
    # the literature's protocol (e.g. Liu et al. 2018's evaluation): each clip's scores smoothed by a Gaussian of
    # 3 frames, forwards and backwards in time, then pooled; it needs the clip's future frames, so offline only
    smoothed = np.concatenate([gaussian_filter1d(c[1].astype(np.float64), 3.0, mode="nearest") for c in clips.values()])
    both = labels.any() and (~labels).any()
    per_clip = {}
    for cid, (y, s, _) in clips.items():
        per_clip[cid] = float(roc_auc_score(y, s)) if y.any() and (~y).any() else None
    defined = [v for v in per_clip.values() if v is not None]
    tp = int((flagged & labels).sum())
    fp = int((flagged & ~labels).sum())
    tn = int((~flagged & ~labels).sum())
    fn = int((~flagged & labels).sum())
    return {
        "n_frames": int(len(labels)),
        "n_anomalous_frames": int(labels.sum()),
        "auc_pooled_raw": float(roc_auc_score(labels, scores)) if both else None,
        "auc_pooled_minmax_per_clip": float(roc_auc_score(labels, normed)) if both else None,
        "auc_pooled_gaussian3": float(roc_auc_score(labels, smoothed)) if both else None,
        "auc_per_clip": per_clip,
        "auc_per_clip_mean": float(np.mean(defined)) if defined else None,
        "average_precision": float(average_precision_score(labels, scores)) if both else None,
        "equal_error_rate": equal_error_rate(labels, scores) if both else None,
        "at_threshold": {
            "tp": tp,
            "fp": fp,
            "tn": tn,
            "fn": fn,
            "accuracy": (tp + tn) / len(labels),
            "false_alarm_rate": fp / (fp + tn) if fp + tn else None,
            "detection_rate": tp / (tp + fn) if tp + fn else None,
        },
    }


def event_metrics(clips: dict[str, tuple[np.ndarray, list[Event], float]]) -> dict:
    """clips: id -> (labels bool (n,), events, fps). What an operator would have seen:

    - false-alarm events: events that overlap no labelled anomalous frame, per minute of
      normal video (the clips' unlabelled frames);
    - labelled anomalous segments (runs of labelled frames) that some event overlaps.
    """
    false_events = segments = hit = 0
    normal_minutes = 0.0
    for labels, events, fps in clips.values():
        labels = np.asarray(labels, bool)
        false_events += sum(1 for e in events if not labels[e.first : e.last + 1].any())
        normal_minutes += float((~labels).sum()) / fps / 60.0
        for a, b in runs(labels):
            segments += 1
            hit += any(e.first < b and e.last >= a for e in events)
    return {
        "n_events": sum(len(c[1]) for c in clips.values()),
        "false_alarm_events": false_events,
        "normal_minutes": normal_minutes,
        "false_alarm_events_per_minute": false_events / normal_minutes if normal_minutes else None,
        "anomalous_segments": segments,
        "segments_hit": hit,
        "segments_hit_share": hit / segments if segments else None,
    }


def balanced_accuracy(truth: np.ndarray, pred: np.ndarray) -> float:
    """The mean of the recalls of the classes present in ``truth`` (sklearn's definition, without its warnings when one class is absent)."""
    return float(np.mean([(pred[truth == k] == k).mean() for k in np.unique(truth)]))


def classification_metrics(truth: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict:
    """Per-frame metrics of a classifier: truth ``(n,)`` class indices, probs ``(n, K)``. JSON-ready.

    Accuracy, balanced accuracy (the mean of per-class recall: what counts when
    incidents are rare), per-class precision / recall / F1 / support, the confusion
    matrix (rows: truth, columns: prediction) and, for the anomaly question
    (every class but ``classes[0]``, "normal", against it), the ROC AUC of 1 - p(normal).
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support, roc_auc_score

    truth = np.asarray(truth, dtype=np.int64)
    pred = probs.argmax(axis=1)
    labels = list(range(len(classes)))
    p, r, f, n = precision_recall_fscore_support(truth, pred, labels=labels, zero_division=0)
    anomalous = truth != 0
    return {
        "classes": list(classes),
        "n_frames": int(len(truth)),
        "accuracy": float(accuracy_score(truth, pred)),
        "balanced_accuracy": balanced_accuracy(truth, pred),
        "per_class": {c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(n[i])} for i, c in enumerate(classes)},
        "confusion": confusion_matrix(truth, pred, labels=labels).tolist(),
        "auc_anomalous": float(roc_auc_score(anomalous, 1.0 - probs[:, 0])) if anomalous.any() and (~anomalous).any() else None,
    }
