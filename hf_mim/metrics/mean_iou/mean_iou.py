"""Mean IoU of semantic segmentation as a local `evaluate` module (the Hub's `evaluate.load("mean_iou")` needs the
network). Everything is read off one confusion matrix accumulated over all images, so evaluating in batches,
or on several processes whose matrices are summed, gives the same numbers as one pass."""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = ("Per-category IoU = TP / (TP + FP + FN), their mean over the categories present in the references "
                "or predictions, mean per-category accuracy, and overall pixel accuracy; pixels labelled "
                "ignore_index are not counted.")
_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of 2-D `int` arrays): predicted label maps.
    references (`list` of 2-D `int` arrays): true label maps, each the shape of its prediction.
    num_labels (`int`): number of categories (ids 0..num_labels-1).
    ignore_index (`int`, default 255): reference label of pixels left out.
Returns:
    mean_iou, mean_accuracy, overall_accuracy (`float`), per_category_iou, per_category_accuracy (`list` of
    `float`, nan for a category absent from both references and predictions).
"""


def confusion_matrix(predictions, references, num_labels, ignore_index=255):
    """(num_labels, num_labels) int64 counts, rows = reference, columns = prediction, ignored pixels left out."""
    predictions = np.asarray(predictions).ravel().astype(np.int64)
    references = np.asarray(references).ravel().astype(np.int64)
    if predictions.shape != references.shape:
        raise ValueError(f"a prediction has {predictions.size} pixels but its reference {references.size}")
    kept = references != ignore_index
    predictions, references = predictions[kept], references[kept]
    if references.size and (references.min() < 0 or references.max() >= num_labels):
        raise ValueError(f"reference labels must be in 0..{num_labels - 1} or {ignore_index}; found "
                         f"{references.min()}..{references.max()}")
    pairs = references * num_labels + np.clip(predictions, 0, num_labels - 1)
    return np.bincount(pairs, minlength=num_labels * num_labels).reshape(num_labels, num_labels)


def scores_from_confusion(confusion):
    """The metric's results from an accumulated confusion matrix (plain floats; nan where undefined)."""
    confusion = np.asarray(confusion, dtype=np.float64)
    true_positives = np.diag(confusion)
    references_per_class = confusion.sum(axis=1)
    union = references_per_class + confusion.sum(axis=0) - true_positives
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, true_positives / union, np.nan)
        accuracy = np.where(references_per_class > 0, true_positives / references_per_class, np.nan)
    total = confusion.sum()
    if total == 0:
        raise ValueError("mean IoU of an evaluation set without a counted pixel is undefined")
    return {"mean_iou": float(np.nanmean(iou)), "mean_accuracy": float(np.nanmean(accuracy)),
            "overall_accuracy": float(true_positives.sum() / total),
            "per_category_iou": [float(v) for v in iou], "per_category_accuracy": [float(v) for v in accuracy]}


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MeanIoU(evaluate.Metric):
    def _info(self):
        label_map = datasets.Sequence(datasets.Sequence(datasets.Value("int64")))
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": label_map, "references": label_map}),
        )

    def _compute(self, predictions, references, num_labels, ignore_index=255):
        if len(references) == 0:
            raise ValueError("mean IoU of an empty evaluation set is undefined")
        confusion = np.zeros((num_labels, num_labels), dtype=np.int64)
        for prediction, reference in zip(predictions, references):
            confusion += confusion_matrix(prediction, reference, num_labels, ignore_index)
        return scores_from_confusion(confusion)
