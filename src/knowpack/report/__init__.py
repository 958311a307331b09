"""Study reports: results.csv/summary.csv aggregation, statistics, figures and one HTML page."""

from knowpack.report.aggregate import results_frame, summary_frame, write_results
from knowpack.report.html import build_report

__all__ = ["build_report", "results_frame", "summary_frame", "write_results"]
