"""Evaluation: features -> distances -> CMC / mAP per target, and the tables users read."""

from .ranking import NonFiniteFeaturesError, check_finite_features, evaluate_features, extract_features
from .report import (
    as_stored,
    average_results,
    compare_tables,
    format_split_table,
    format_table,
    images_tested,
    result_from_json,
    result_to_json,
    results_from_json,
    results_to_json,
    split_summary,
)

__all__ = [
    "NonFiniteFeaturesError",
    "check_finite_features",
    "as_stored",
    "average_results",
    "compare_tables",
    "evaluate_features",
    "extract_features",
    "format_split_table",
    "format_table",
    "images_tested",
    "result_from_json",
    "result_to_json",
    "results_from_json",
    "results_to_json",
    "split_summary",
]
