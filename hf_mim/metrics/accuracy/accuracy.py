"""Top-1 accuracy as a local `evaluate` module (the Hub's `evaluate.load("accuracy")` needs the network)."""

import datasets
import evaluate
import numpy as np
import hf_mim.metrics.base as local_metrics

_DESCRIPTION = "Fraction of predictions equal to the references."
_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): predicted class ids.
    references (`list` of `int`): true class ids.
Returns:
    accuracy (`float`): in [0, 1].
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Accuracy(local_metrics.LocalMetric):
    metric_description = _DESCRIPTION
    metric_arguments = _KWARGS_DESCRIPTION
    input_features = datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")})

    def _compute(self, predictions, references):
        predictions = np.asarray(predictions)
        references = np.asarray(references)
        if len(references) == 0:
            raise ValueError("accuracy of an empty evaluation set is undefined")
        return {"accuracy": float((predictions == references).mean())}
