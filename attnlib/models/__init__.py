"""Networks: the backbone registry and the attention heads built on it.

Importing this package registers every backbone family in :mod:`attnlib.models.registry` (a leaf module), so
``create_model`` knows all names whichever module of the package is imported first.
"""

from attnlib.models import backbones, gala  # noqa: F401  (they register their backbones)
