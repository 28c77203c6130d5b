"""Shared fixtures. Tests run on CPU with two threads (the CI machine has two cores)."""
import atexit
import os
import shutil
import subprocess
import tempfile

import pytest
import torch

from tests.helpers import FASHION_MNIST, NO_FASHION_MNIST

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # local Ray stays on 127.0.0.1
# No test reads or writes the key that signs the user's experiments (sweep.trust): one of the session's
# own, for every fixture and test, module-scoped sweeps included (set before any of them runs).
os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="ablation-sweeper-tests-config-")
atexit.register(shutil.rmtree, os.environ["XDG_CONFIG_HOME"], True)
torch.set_num_threads(2)



@pytest.fixture(scope="module")
def local_ray():
    """A private local Ray for one test module (2 CPUs, no dashboard; never a cluster `ray start` left);
    test_reliability_sweep.py has its own, offline."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.fixture(autouse=True)
def isolated_data_dir(tmp_path_factory, monkeypatch):
    """No test reads or writes the user's real dataset cache."""
    monkeypatch.setenv("ABLATION_DATA_DIR", str(tmp_path_factory.getbasetemp() / "data"))


# A real Fashion-MNIST run that learns: 4,000 training images, 3 epochs, a half-width SqueezeNet on
# CPU (>= 75% test accuracy), run once by train.py's CLI and shared by the tests that need a trained model.
FASHION_MNIST_RUN = ["--dataset", "fashion-mnist", "--subset", "4000", "--epochs", "3", "--width", "0.5",
                     "--batch-size", "128", "--lr", "0.1", "--augment", "none", "--measure-latency", "false",
                     "--device", "cpu"]


@pytest.fixture(scope="session")
def fashion_mnist_run(tmp_path_factory):
    """The run directory of FASHION_MNIST_RUN (train.py: config.json, checkpoint/, summary.json)."""
    if FASHION_MNIST is None:
        pytest.skip(NO_FASHION_MNIST)
    import train

    run_dir = tmp_path_factory.mktemp("fashion-mnist-run") / "run"
    data_dir = tmp_path_factory.mktemp("fashion-mnist-data")
    assert train.main([*FASHION_MNIST_RUN, "--data-dir", str(data_dir), "--out-dir", str(run_dir)]) == 0
    return run_dir


@pytest.fixture
def unwritable_dir(tmp_path):
    """A directory that even root cannot write into (the immutable attribute), or one without write
    permission for other users."""
    path = tmp_path / "readonly"
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        yield path
        path.chmod(0o755)
        return
    if not shutil.which("chattr") or subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
        pytest.skip("root, and `chattr +i` is not available on this filesystem: no way to make a directory "
                    "unwritable (test_datasets.py::test_unwritable_data_dir covers a file in the way)")
    try:
        yield path
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)
