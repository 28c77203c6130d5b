"""What a sweep found: an experiment's frames (study.load) -> statistics, tables and figures.

It reads what the experiment directory holds through study/ (no Ray cluster, no sweep driver) and
never imports sweep/. ``compared`` chooses which trials of the screen are compared and on which
metric; ``factorial`` fits the seed-blocked factorial model; ``contrasts`` gives a contrast its own
variance (paired over seeds, or Welch) with its equivalence test; ``effects`` gives main effects and
recipe interactions with 95% intervals across seeds; ``importance`` each factor's variance share
(exact ANOVA on a balanced grid, else fANOVA); ``lenth`` Lenth's method and the half-normal plot for
an unreplicated grid; ``stages`` and ``depth`` reproduce the two studies' tables next to their
published figures; ``confirm`` the confirm phase's answers to its declared questions (study.questions)
and its arms' means; ``fidelity`` how far to trust the screen; ``halving`` a successive-halving screen rung
by rung; ``verdicts`` the report's claims as sentences generated from its tests; ``trained`` the
report's first table, what was trained; ``pareto`` and ``plots`` draw accuracy against cost,
learning curves, the effects, interactions and per-class accuracy, each with its caption, and
``confirm_plots`` the confirm phase's arms, leave-one-out costs and screen-against-confirm ranks;
``render`` writes tables as Markdown, CSV or LaTeX (and holds a report's Section);
``confirm_report`` makes the report's screen-then-confirm sections; ``python -m analysis.report
RUN_DIR`` puts it all in one Markdown report, and ``trials.ipynb`` shows the report's sections (``report.sections``)
on a run chosen in its first cell, then the frames behind them to explore.
"""
