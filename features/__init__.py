"""The feature store contract: schemas, atomic Parquet tables with manifests, encoders."""
