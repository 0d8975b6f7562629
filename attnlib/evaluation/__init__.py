"""Scoring trained networks: classification metrics, statistics, explanations, localisation and alignment."""
