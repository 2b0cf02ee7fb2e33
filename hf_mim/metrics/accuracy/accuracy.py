"""Top-1 accuracy as a local `evaluate` module (the Hub's `evaluate.load("accuracy")` needs the network)."""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Fraction of predictions equal to the references."
_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): predicted class ids.
    references (`list` of `int`): true class ids.
Returns:
    accuracy (`float`): in [0, 1].
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references):
        predictions = np.asarray(predictions)
        references = np.asarray(references)
        if len(references) == 0:
            raise ValueError("accuracy of an empty evaluation set is undefined")
        return {"accuracy": float((predictions == references).mean())}
