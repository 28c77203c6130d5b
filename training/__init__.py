"""The engine behind train.py and every sweep trial: a TrainConfig (study.config) in, one trained
model's metrics out, never importing Ray (the sweep wraps ``training.loop.fit``).

``training.loop`` runs one trial (``fit``), reporting study.states' status with every epoch;
``training.engine`` is the hot loop of one epoch and one evaluation; ``training.optim`` builds the
optimiser and schedule; ``training.checkpoint`` writes checkpoints that resume a trial exactly, and
every run's provenance, through study.files (every file whole or not at all);
``training.metrics`` measures params, FLOPs, size and latency; ``training.datasets`` loads a dataset
as uint8 tensors, read by ``training.sources`` (CIFAR, Fashion-MNIST) and ``training.sources_local``
(synthetic, image folders) after ``training.download`` fetched and verified it;
``training.loader`` splits and batches it on the device, and ``training.augment`` augments whole
batches there; ``training.preflight`` checks a trial before anything is written;
``training.reporter`` is train.py's console and TensorBoard output, with the tags
``training.tb_tags`` shares with a sweep's trials; ``training.signals`` makes SIGTERM a Ctrl-C.
"""
