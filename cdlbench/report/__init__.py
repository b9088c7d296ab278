"""Reports: tables, sweeps, baselines, plots and the output formats (one file each under formats/).

records (tables.load) -> summary and paper tables (tables), sweep tables (sweeps), reference
comparisons (baselines) -> Document (document) -> a registered format's renderer (formats)."""
from .document import Block, Document, document, render, render_frame  # noqa: F401
from .formats import FORMATS, FormatSpec, format_names, format_spec, renderer  # noqa: F401
from .markup import BOLD_RULE, Candidate, Markup, NumberFormat, clear_best, fmt_cell, fmt_number, header  # noqa: F401
from .tables import (ROW_KEYS, Row, Section, accelerator_setting, best_rows, column_format,  # noqa: F401
                     comparison_frame, comparisons, footnote_lines, load, load_curves, long_frame, metric_order,
                     sections, summarise, table_frame)
