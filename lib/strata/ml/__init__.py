"""Machine learning on gold tables: pure DataFrame -> DataFrame preparation for the training job."""
