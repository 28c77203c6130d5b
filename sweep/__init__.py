"""Sweeps: many ``training.loop.fit`` trials as phases of one experiment, each a Ray Tune experiment.

``sweep/run.py`` is the command (flags only); ``sweep.planning`` plans the sweep as plain data before
anything runs (the screen, its rungs, the confirm phase, one trial's config, the dry run);
``sweep.design`` chooses a fractional screen's arms; ``sweep.driver`` runs the phases one after
another, choosing each rung's and the confirm phase's arms by study.selection's rules;
``sweep.spaces`` declares the named spaces; ``sweep.vocabulary`` reads a space (Python dict or YAML
file) into Ray Tune objects; ``sweep.tuner`` builds a phase's Tuner (scheduler, searcher,
resources, restore) and adds what Tune's controller lacks while it runs (signing, a moved experiment,
--trial-timeout, --time-budget, a lost node), and ``sweep.sampler`` gives it an Optuna NSGA-II sampler that Ray Tune can
pickle; ``sweep.experiment`` claims the experiment directory, holds it for one driver, reads its plan
back and summarises a phase; ``sweep.trust`` signs Ray Tune's pickles with the user's key and restores
only what it signed; ``sweep.trainable`` is the thin Ray wrapper of ``fit`` that every trial
worker loads; ``sweep.storage`` stops a sweep cleanly on a full disk and keeps the driver's own record
of results; ``sweep.board`` writes TensorBoard; ``sweep.console`` prints the live table and quiets
Ray; ``sweep.estimate`` prices a sweep in wall time before it runs, from a short probe on this
machine; ``sweep.packing`` chooses the share of a GPU a trial takes by default, from the largest
arm's training footprint; ``sweep.closing`` prints what a phase ended with, the one module here that
calls into analysis/ and deploy/.

The experiment directory's files, their readers and the rules that choose arms are study/'s, shared
with the analysis; nothing here but sweep.closing imports analysis/.
"""
