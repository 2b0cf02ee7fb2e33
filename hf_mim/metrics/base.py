"""What the local metric modules share. Each module's metric subclasses `LocalMetric` through
`import hf_mim.metrics.base as local_metrics`: evaluate takes the first metric class a module holds, so the base
stays out of the module's own names."""

import datasets
import evaluate


class LocalMetric(evaluate.Metric):
    """An `evaluate.Metric` described by its class: `metric_description`, `metric_arguments` (the arguments and
    the result) and `input_features` (the input columns). (evaluate's own names for them are properties.)"""

    metric_description = ""
    metric_arguments = ""
    input_features: datasets.Features

    def _info(self):
        return evaluate.MetricInfo(description=self.metric_description, citation="",
                                   inputs_description=self.metric_arguments, features=self.input_features)
