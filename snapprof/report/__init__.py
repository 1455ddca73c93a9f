"""Reporters: they take frames (or the model built from them) and metadata, never paths."""
