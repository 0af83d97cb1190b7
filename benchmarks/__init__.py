"""Benchmarks: each module measures one thing and writes benchmarks/results/<name>.md; `make bench` runs them all
and `benchmarks/report.py` assembles BENCHMARKS.md from those files (figures are never typed by hand)."""
