"""Top-k accuracy from class scores as a local `evaluate` module: a reference counts as hit when its class is
among the k highest scores (ties broken by the lower class id)."""

import datasets
import evaluate
import numpy as np
import hf_mim.metrics.base as local_metrics

_DESCRIPTION = "Fraction of references whose class is among the k highest-scoring classes."
_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `float`): class scores (logits or probabilities), one row per example.
    references (`list` of `int`): true class ids.
    k (`int`, defaults to 5): how many top classes count.
Returns:
    top_k_accuracy (`float`): in [0, 1]; with fewer than k classes every reference is a hit.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class TopKAccuracy(local_metrics.LocalMetric):
    metric_description = _DESCRIPTION
    metric_arguments = _KWARGS_DESCRIPTION
    input_features = datasets.Features(
        {"predictions": datasets.Sequence(datasets.Value("float32")), "references": datasets.Value("int64")}
    )

    def _compute(self, predictions, references, k=5):
        scores = np.asarray(predictions, dtype=np.float64)
        references = np.asarray(references)
        if scores.ndim != 2 or len(scores) != len(references):
            raise ValueError("predictions must be a (num_examples, num_classes) array of scores")
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return {"top_k_accuracy": float((order == references[:, None]).any(axis=1).mean())}
