"""Machine learning: pure DataFrame functions for splits, evaluation and scoring."""
