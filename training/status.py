"""The `status` a trial reports with every epoch's metrics, defined once by the loop that produces it
(training/loop.py) for everything that reads it: the console, the sweep, the analysis.

No imports: the analysis reads experiment directories without torch, and imports this.

- RUNNING: more epochs follow (every report but the last, unless the loss diverged).
- FINISHED: every epoch of the schedule ran (the main phase and, if configured, fine-tuning).
- EARLY_STOPPED: patience (`early_stop_patience` epochs without a better validation accuracy) ended a
  phase; a fine-tuning phase configured after it still runs, and the trial still ends early-stopped.
- DIVERGED: a NaN or inf training loss; the epoch stopped at once and the trial ended there. It is also
  the status of that epoch's report, which is the last.
"""

RUNNING = "running"
FINISHED = "finished"
EARLY_STOPPED = "early_stopped"
DIVERGED = "diverged"

FINAL_STATUSES = (FINISHED, EARLY_STOPPED, DIVERGED)  # what the last report of a trial that ended says
