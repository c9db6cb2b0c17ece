"""The names a report shares between its modules: the files it writes and the main model stage.

They live apart so that the reader of run folders (which skips the plots folder), the pages
(which link the other files) and the writer all take them from one place.
"""

from __future__ import annotations

SUMMARY, REPORT_MD, REPORT_HTML, PLOTS = "summary.csv", "report.md", "report.html", "plots"
PLOT_FILES = ("throughput_vs_batch_size.png", "quality_vs_latency.png", "per_class.png")
# The stage whose latency, load time and quality the headline columns and plots show.
MAIN_MODEL = "model"
