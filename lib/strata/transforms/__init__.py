"""Per-layer transforms: pure DataFrame -> DataFrame functions."""
