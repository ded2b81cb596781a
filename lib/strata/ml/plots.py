"""Figures of an evaluation as PNG files: ROC and precision-recall curves, the confusion matrix,
calibration and feature importances. The curves come from one small aggregate of the scored rows
(scores rounded to 1/resolution: at most resolution + 1 points), never from collected rows."""
from __future__ import annotations

from pathlib import Path

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

# Where train logs evaluation_record in its MLflow run (the run report reads the champion's).
CURVES_ARTIFACT = "evaluation/curves.json"


def curve_points(scored: DataFrame, label: str, score: str, resolution: int = 1000) -> dict[str, list[float]]:
    """ROC (fpr, tpr) and PR (recall, precision) points, thresholds from high to low."""
    counts = (scored.groupBy(F.round(F.col(score) * resolution).alias("bucket"))
              .agg(F.sum(F.col(label)).alias("pos"), F.sum(1 - F.col(label)).alias("neg"))
              .orderBy(F.desc("bucket")).collect())
    positives = sum(r.pos for r in counts) or 1
    negatives = sum(r.neg for r in counts) or 1
    tp = fp = 0
    fpr, tpr, recall, precision = [0.0], [0.0], [0.0], [1.0]
    for row in counts:
        tp, fp = tp + row.pos, fp + row.neg
        fpr.append(fp / negatives)
        tpr.append(tp / positives)
        recall.append(tp / positives)
        precision.append(tp / (tp + fp) if tp + fp else 1.0)
    return {"fpr": fpr, "tpr": tpr, "recall": recall, "precision": precision}


def evaluation_record(curves: dict, auc: dict, metrics: dict, threshold: float) -> dict:
    """The test evaluation as plain data (train logs it as evaluation/curves.json): the curve
    points rounded to 6 digits, the areas, the positive rate, threshold and confusion matrix."""
    return {"roc": {k: [round(v, 6) for v in curves[k]] for k in ("fpr", "tpr")},
            "pr": {k: [round(v, 6) for v in curves[k]] for k in ("recall", "precision")},
            "roc_auc": auc["roc_auc"], "pr_auc": auc["pr_auc"], "positive_rate": auc["positive_rate"],
            "threshold": float(threshold), "rows": metrics.get("rows"),
            "confusion": {k: int(v) for k, v in metrics["confusion"].items()}}


def _figure():
    import matplotlib
    matplotlib.use("Agg")  # no display on a cluster driver
    import matplotlib.pyplot as plt
    return plt


def roc_figure(curves: dict, auc: dict, title: str):
    """The ROC curve (false against true positive rate) with its area and the chance diagonal."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot(curves["fpr"], curves["tpr"], label=f"ROC AUC {auc['roc_auc']:.3f}")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"{title}: ROC")
    ax.legend(loc="lower right")
    return fig


def pr_figure(curves: dict, auc: dict, title: str):
    """The precision-recall curve with its area (average precision) and the positive rate."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot(curves["recall"], curves["precision"], label=f"PR AUC {auc['pr_auc']:.3f}")
    ax.axhline(auc["positive_rate"], linestyle="--", color="grey", linewidth=0.8, label="positive rate")
    ax.set(xlabel="recall", ylabel="precision", ylim=(0, 1.02), title=f"{title}: precision-recall")
    ax.legend(loc="lower left")
    return fig


def confusion_figure(confusion: dict, title: str):
    """The confusion matrix (actual by predicted) with its counts."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(3.8, 3.4))
    cells = [[confusion["tn"], confusion["fp"]], [confusion["fn"], confusion["tp"]]]
    # cells as vector shapes (no embedded image), actual 0 on top
    ax.pcolormesh(cells, cmap="Blues", edgecolors="white", linewidth=1)
    ax.invert_yaxis()
    ax.set_aspect("equal")
    top = max(max(row) for row in cells) or 1
    for i in range(2):
        for j in range(2):
            ax.text(j + 0.5, i + 0.5, f"{cells[i][j]:,}", ha="center", va="center",
                    color="white" if cells[i][j] > top / 2 else "black")
    ax.set(xticks=[0.5, 1.5], yticks=[0.5, 1.5], xticklabels=["0", "1"], yticklabels=["0", "1"],
           xlabel="predicted", ylabel="actual", title=f"{title}: confusion")
    return fig


def write_all(folder: Path, curves: dict, auc: dict, confusion: dict, calibration: list[tuple],
              importances: list[tuple[str, float]], title: str) -> list[Path]:
    """Writes roc.png, pr.png, confusion_matrix.png, calibration.png and feature_importance.png."""
    plt = _figure()
    folder.mkdir(parents=True, exist_ok=True)
    written = []

    def save(fig, name):
        path = folder / name
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)

    save(roc_figure(curves, auc, title), "roc.png")
    save(pr_figure(curves, auc, title), "pr.png")
    save(confusion_figure(confusion, title), "confusion_matrix.png")

    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8)
    filled = [b for b in calibration if b[4]]  # (lower, upper, mean predicted, observed rate, count)
    ax.plot([b[2] for b in filled], [b[3] for b in filled], marker="o")
    ax.set(xlabel="mean predicted probability", ylabel="observed positive rate", title=f"{title}: calibration")
    save(fig, "calibration.png")

    top = importances[:20][::-1]
    fig, ax = plt.subplots(figsize=(5.5, 0.28 * len(top) + 1.2))
    ax.barh([name for name, _ in top], [value for _, value in top])
    ax.set(xlabel="importance (trees) or coefficient (scaled)", title=f"{title}: features")
    save(fig, "feature_importance.png")
    return written
