"""Datasets of the training core, read from the data roots without downloading anything."""
