"""Evaluation: full-ranking metrics, breakdowns, significance tests and the HTML report.

Shared by early stopping (training), the evaluate and export stages and the report.
"""
