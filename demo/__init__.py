"""``diccae demo``: generated clips with designed look-alike and sound-alike classes,
and the end-to-end pipeline (extract -> cluster -> confusion -> train -> eval -> audit)
with its report.

Public API: :func:`run_demo` with :class:`DemoSettings` (returns a
:class:`DemoReport`), :func:`make_demo_dataset` / :func:`load_demo_design` (the data
set alone), and :func:`demo.media.write_clip` (imported from its module: it needs
PyAV).  The demo uses featstore and trainer through their public functions, reports
progress as :class:`featstore.progress.ProgressUpdate` values and prints nothing;
nothing imports it but the CLI (``cli/cmd_demo.py``), tests and benchmarks.
"""

from demo.data import load_demo_design, make_demo_dataset
from demo.pipeline import DemoReport, DemoSettings, run_demo

__all__ = ["DemoReport", "DemoSettings", "load_demo_design", "make_demo_dataset", "run_demo"]
