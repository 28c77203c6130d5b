"""What a sweep found: an experiment directory -> tidy frames -> tables and figures.

``analysis.load`` reads STORAGE/NAME (no Ray cluster; the files as ``sweep.record`` names them,
Ray's own through ``analysis.ray_files``) into a trial frame and an epoch frame; ``stages`` and
``depth`` reproduce the two studies' tables next to their published figures; ``factorial`` fits the
seed-blocked factorial model; ``contrasts`` gives a contrast its own variance (paired over seeds, or
Welch) with its equivalence test; ``effects`` gives main effects and recipe interactions with 95%
intervals across seeds; ``importance`` each factor's variance share (exact ANOVA on a balanced grid,
else fANOVA); ``lenth`` Lenth's method and the half-normal plot for an unreplicated grid;
``subdesigns`` the full 2x2s among the confirm arms; ``verdicts`` the report's claims as
sentences generated from its tests; ``confirm`` the screen's ranking, the
confirm set and the confirm phase's estimates; ``fidelity`` how far to trust the screen; ``halving`` a successive-halving screen rung by rung; ``best`` the one best trial and arm;
``learning`` which trials learned anything (the arms at chance, tested and named); ``trained``
the report's first table, what was trained; ``pareto`` and
``plots`` draw accuracy against cost, learning curves, the effects, interactions and per-class
accuracy, each with its caption, and ``confirm_plots`` the confirm phase's arms, leave-one-out
costs and screen-against-confirm ranks;
``render`` writes tables as Markdown, CSV or LaTeX (and holds a report's Section); ``confirm_report``
makes the report's screen-then-confirm sections; ``python -m analysis.report RUN_DIR`` puts it all
in one Markdown report, and ``trials.ipynb`` walks through the same functions.
"""
