"""Figures and tables of results, and the results digest of a main job."""
