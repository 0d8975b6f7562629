"""Networks: the backbone registry and the heads built on it (CAM, ABN, GALA).

Importing this package registers every backbone family and head in :mod:`attnlib.models.registry` (a leaf
module), so ``create_model`` knows all names whichever module of the package is imported first.
"""

from attnlib.models import abn, backbones, cam, gala  # noqa: F401  (they register their backbones and heads)
