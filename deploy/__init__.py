"""Deployment: the model a sweep (or one train.py run) found, as files a device can run, each verified
and measured here.

``python -m deploy.export RUN_DIR`` is the command (``deploy.export``); ``deploy.choose`` picks the
trials (on validation accuracy only) and loads their best-validation weights; ``deploy.onnx_export``
writes ONNX fp32 and static int8, checks them against PyTorch and measures them; ``deploy.latency``
re-measures a multi-objective front's latency with the machine to itself.
"""
