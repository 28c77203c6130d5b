"""Sweeps: many `training.loop.fit` trials as one Ray Tune experiment.

``sweep/run.py`` is the command; ``sweep.spaces`` declares the named spaces and the presets their
bundle keys name; ``sweep.vocabulary`` reads a space (Python dict or YAML file) into Ray Tune
objects; ``sweep.trainable`` is the thin Ray wrapper of ``fit``; ``sweep.experiment`` builds the
Tuner (scheduler, searcher, storage, resume) and summarises its results.
"""
