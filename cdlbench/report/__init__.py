"""Reports: tables, sweeps, baselines, claims, plots and the output formats."""
from .tables import *  # noqa: F401,F403
from .tables import load, load_curves, render, render_frame, summarise  # noqa: F401
