"""The experiment as data, and the rules that choose from it: the bottom package, free of torch and
Ray, that models/, training/, sweep/, analysis/ and deploy/ all stand on (tests/test_imports.py).

What a trial is: ``study.config`` is TrainConfig, the schema of every knob (and the names of the
built-in networks and datasets); ``study.trial`` resolves one trial's values from its Ray config
(the recipe and stage presets, --smoke-test's caps, a rung's budget); ``study.states`` names a
trial's states and why it ended (TrialState, stop_reason), and which trials ran to their end.

What an experiment directory holds: ``study.layout`` names every file a sweep leaves and reads and
writes sweep.json; ``study.ray_files`` reads Ray Tune's files as they lie on disk (nothing
unpickled); ``study.load`` turns a directory into an Experiment (a trial frame and an epoch frame);
``study.files`` writes any file whole or not at all.

The rules that choose: ``study.factors`` (which columns are factors, and their reference levels);
``study.selection`` (the screen's ranking of arms, the arms a rung promotes, the confirm set);
``study.best`` (the best trial, the best arm, the best of a confirm phase); ``study.learning`` (which
trials learned anything); ``study.front`` (trials no other beats on every objective); ``study.questions``
(the confirm phase's declared questions, answered look by look, and which arms train the next seed),
on ``study.sequential`` (group-sequential boundaries and repeated confidence intervals);
``study.significance`` (the level of every test, the default equivalence margin, the family
adjustment).

``study.cli`` is what every command shares (one-line errors with exit status 2, --set, durations);
``study.busy`` how busy the machine is with other work while something is timed.
"""
