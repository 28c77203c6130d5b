"""Shared fixtures. Tests run on CPU with two threads (the CI machine has two cores)."""
import os

import pytest
import torch

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # local Ray stays on 127.0.0.1
torch.set_num_threads(2)

FASHION_MNIST_DEBIAN = "/usr/share/datasets/fashion-mnist"


@pytest.fixture(autouse=True)
def isolated_data_dir(tmp_path_factory, monkeypatch):
    """No test reads or writes the user's real dataset cache."""
    monkeypatch.setenv("ABLATION_DATA_DIR", str(tmp_path_factory.getbasetemp() / "data"))


def needs_fashion_mnist():
    return pytest.mark.skipif(not os.path.isdir(FASHION_MNIST_DEBIAN),
                              reason="apt-get install dataset-fashion-mnist (CI installs it)")
