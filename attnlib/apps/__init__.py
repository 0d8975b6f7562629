"""Applications on top of the library: the attention-map editor and the per-dataset exploration."""
