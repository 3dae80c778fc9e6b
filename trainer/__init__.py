"""diccae trainer: the confusion-aware audio-visual model trained on store shards.

Reads feature-store shards and label files only; it never imports extraction code.
"""
