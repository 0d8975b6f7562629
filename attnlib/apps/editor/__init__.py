"""The interactive attention-map editor: :class:`EditorSession` (state, undo, save, predictions) and
:class:`AttentionEditor` (its JupyterLab widget); :mod:`attnlib.apps.editor.study` opens a session on a
replicate of the ABN study."""

from attnlib.apps.editor.session import EditorSession
from attnlib.apps.editor.widget import AttentionEditor

__all__ = ["AttentionEditor", "EditorSession"]
