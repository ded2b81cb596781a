"""Raw data sources."""
