"""Sweeps: many `training.loop.fit` trials as phases of one experiment, each a Ray Tune experiment.

``sweep/run.py`` is the command (flags only); ``sweep.plan`` plans the screen as plain data,
``sweep.design`` a fractional screen's arms, and ``sweep.phases`` the rungs and the confirm phase; ``sweep.driver`` runs the phases one after another;
``sweep.spaces`` declares the named spaces and the presets their bundle keys name;
``sweep.vocabulary`` reads a space (Python dict or YAML file) into Ray Tune objects;
``sweep.tuner`` builds a phase's Tuner (scheduler, searcher, resources, restore), and
``sweep.sampler`` gives it an Optuna NSGA-II sampler that Ray Tune can pickle;
``sweep.experiment`` claims the experiment directory, reads its plan back and summarises a phase;
``sweep.record`` owns the experiment record on disk (file names, phase names, stop reasons, the
readers of sweep.json and of a trial's config), shared with the analysis; ``sweep.trainable`` is the
thin Ray wrapper of ``fit`` that every trial worker loads; ``sweep.storage`` stops a sweep cleanly on
a full disk and keeps the driver's own record of results; ``sweep.board`` writes TensorBoard;
``sweep.console`` prints the live table and quiets Ray; ``sweep.estimate`` prices a sweep in wall
time before it runs, from a short probe on this machine; ``sweep.packing`` chooses the share of a
GPU a trial takes by default, from the largest arm's training footprint.
"""
