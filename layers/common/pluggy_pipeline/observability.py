"""The one Logger and Metrics of each function, shared by the handler and the package.

A single parent Logger (not per-module child loggers) so domain code can add keys such as eventId
whether it runs under a Lambda handler, a test or the local tools. Powertools reads its level and
sampling settings from the environment here, once per container, as its documentation expects.
"""

from aws_lambda_powertools import Logger, Metrics

SERVICE = "pluggy-pipeline"
METRICS_NAMESPACE = "PluggyPipeline"

logger = Logger(service=SERVICE)
metrics = Metrics(namespace=METRICS_NAMESPACE, service=SERVICE)
