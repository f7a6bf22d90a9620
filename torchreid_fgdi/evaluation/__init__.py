"""Evaluation: features -> distances -> CMC / mAP per target, and the tables users read."""

from .ranking import evaluate_features, extract_features
from .report import average_results, compare_tables, format_table

__all__ = ["average_results", "compare_tables", "evaluate_features", "extract_features", "format_table"]
