"""The lowest layer: file I/O, paths, device, seeding and threads, progress bars, code provenance, profiles.

Nothing here imports any other part of attnlib (except :class:`attnlib.UsageError`)."""
