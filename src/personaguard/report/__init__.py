"""Stage 5, report: PNG plots and the Markdown/HTML report of a run folder."""
