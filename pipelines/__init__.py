"""Data pipelines: demo data generation and feature/training pipeline stages."""
