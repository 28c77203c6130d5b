"""make test's first step: find Fashion-MNIST on this machine (Debian's dataset-fashion-mnist, or the
default dataset cache's copy), else download it once into that cache with the project's own
downloader (md5-verified), so that the suite runs its real-data tests as CI does. Without the network
it says in one line how to get the files, and the suite runs with those tests skipped. Exit status 0
either way: the tests themselves say what they skipped.

    python scripts/test_data.py
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)  # the repository root, not scripts/

from training import sources  # noqa: E402
from training.download import DatasetError  # noqa: E402


def main() -> int:
    found = sources.fashion_mnist_copy()
    if found:
        print(f"test data: Fashion-MNIST in {found}")
        return 0
    print(f"test data: downloading Fashion-MNIST (31 MB) from {sources.FASHION_MNIST_URL} into "
          f"{sources.FASHION_MNIST_USER_DIR}", flush=True)
    try:
        print(f"test data: Fashion-MNIST in {sources.fetch_fashion_mnist()}")
    except (DatasetError, OSError) as exc:
        print(f"test data: no Fashion-MNIST ({str(exc).splitlines()[0]}); the tests that train on it will be "
              "skipped: apt-get install dataset-fashion-mnist, or put its four .gz files in "
              f"{sources.FASHION_MNIST_USER_DIR}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
