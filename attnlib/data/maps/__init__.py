"""Human attention maps: their sources (gaze, bubbles, lesions, ClickMe, the simulated editor), the edits,
the edited-map store, and transforms applied alike to an image and its map."""
