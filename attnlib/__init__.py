"""attnlib: human-attention supervision for CNNs, reproduced."""

__version__ = "0.1.0"
