"""pluggy_pipeline: the code shared by the receiver and processor Lambdas (shipped as the CommonLayer)."""

__version__ = "0.1.0"
