"""Reports and regression checks over run stores: paper-style tables, plots, a CI verdict.

``pspo-eval report`` reads one or more run directories (and optionally trainer output directories)
and writes Markdown, LaTeX, CSV and one self-contained HTML page; ``pspo-eval regress`` compares a
run with a saved baseline (or another run) on paired problems and exits 1 on a significant drop.

Every number is computed here from the stored records (samples, judgments, trainer metrics), with
the statistics of :mod:`pspo_eval.stats`; nothing is read from ``results.json``. This package's
``__init__`` stays empty of imports so that ``pspo-eval --help`` does not load pandas or matplotlib.
"""
