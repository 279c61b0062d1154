"""Names shared by logs and metrics; constants so no module depends on import-time environment."""

SERVICE = "pluggy-pipeline"
METRICS_NAMESPACE = "PluggyPipeline"
