"""Networks: the backbone registry and the attention heads built on it."""
