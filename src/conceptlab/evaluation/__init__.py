"""Evaluation: judges, metrics and reports."""
