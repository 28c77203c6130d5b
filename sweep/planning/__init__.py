"""Planning a sweep, as plain data, before anything of it runs (``sweep.driver`` only runs what is
planned here, ``sweep/run.py`` only parses flags):

``sweep.planning.plan`` is a phase's :class:`Plan` (what a Tuner needs, recorded in sweep.json);
``sweep.planning.screen`` plans the screen from a space and the flags (overrides, seeds,
--smoke-test, the checks of flags, size and paths) with sweep.json's record of every phase;
``sweep.planning.phases`` plans the phases that follow: a successive-halving screen's rungs (their
budgets) and the confirm phase (its settings, fresh seeds, its trials once its arms are chosen);
``sweep.planning.configs`` is one trial's config as a sweep runs it and the distinct trials checked
before anything runs; ``sweep.planning.dry_run`` prints a plan (``--dry-run``).
"""
