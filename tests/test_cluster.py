"""A real two-node Ray cluster runs a sweep through `--address`, its trials land on both nodes, and it
survives losing the second one mid-sweep: a
sweep of a user's own network (a file outside the project, at the same path on both nodes, as
docs/CLUSTER.md asks), whose toggle is the searched axis.

The second node lives in a network namespace this test creates (`ip netns add`), joined to the host
by a veth pair on a private 10.x.y.0/24: every packet stays on that pair. The head starts on the host
end (`ray start --head --node-ip-address=10.x.y.1`), the worker inside the namespace
(`ip netns exec NS ray start --address=10.x.y.1:PORT --node-ip-address=10.x.y.2`). Ray 2.60 clusters
use token authentication, so every process gets RAY_AUTH_MODE=token. Both `ray start --block`
processes run in their own sessions and are torn down by process group, with the namespace deleted,
also when the test fails. Needs root and iproute2.
"""
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RAY = str(Path(sys.executable).with_name("ray"))
pytestmark = pytest.mark.slow


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=30)


def netns_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create a network namespace"
    if not shutil.which("ip"):
        return "needs iproute2's `ip`"
    if subprocess.run(["ip", "netns", "list"], capture_output=True).returncode != 0:
        return "`ip netns` is not available here"
    return None


@pytest.fixture
def veth_namespace():
    """(namespace, host_ip, node_ip) on a fresh veth pair; removed afterwards."""
    reason = netns_unavailable()
    if reason:
        pytest.skip(reason)
    tag = f"{os.getpid() % 10000}{random.randrange(100)}"
    ns, host_if, ns_if = f"abl-ns{tag}", f"ablh{tag}", f"abln{tag}"
    subnet = f"10.{random.randrange(100, 250)}.{random.randrange(1, 250)}"
    try:
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        sh("ip", "link", "set", ns_if, "netns", ns)
        sh("ip", "addr", "add", f"{subnet}.1/24", "dev", host_if)
        sh("ip", "link", "set", host_if, "up")
        for cmd in (["ip", "addr", "add", f"{subnet}.2/24", "dev", ns_if], ["ip", "link", "set", ns_if, "up"],
                    ["ip", "link", "set", "lo", "up"]):
            sh("ip", "netns", "exec", ns, *cmd)
    except subprocess.CalledProcessError as exc:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        pytest.skip(f"cannot build a veth pair in a namespace here: {exc.stderr.strip()}")
    try:
        yield ns, f"{subnet}.1", f"{subnet}.2"
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)  # deletes its peer too
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def cluster_env() -> dict[str, str]:
    """Token auth everywhere; multi-node allowed again (conftest's RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0,
    which keeps local Ray on 127.0.0.1, also makes `ray start --address` refuse to join)."""
    return {**os.environ, "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1"}


@pytest.fixture
def current_cluster_file():
    """`ray start` records its address in /tmp/ray/ray_current_cluster, where a plain `ray.init()`
    looks first; `ray stop` would remove it, but it also stops every Ray on the machine. Put back
    what was there before."""
    path = Path("/tmp/ray/ray_current_cluster")
    before = path.read_text() if path.is_file() else None
    yield
    if before is None:
        path.unlink(missing_ok=True)
    else:
        path.write_text(before)


def start_node(prefix: list[str], *args: str) -> subprocess.Popen:
    """`ray start --block` in its own session: its group holds every process of the node."""
    return subprocess.Popen([*prefix, RAY, "start", "--block", "--num-cpus=1", "--disable-usage-stats",
                             *args], env=cluster_env(), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def stop_node(node: subprocess.Popen) -> None:
    """SIGTERM the node's process group, give `ray start --block` time to stop its processes, then
    SIGKILL whatever of the group is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(node.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        node.wait(timeout=30)
    time.sleep(2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(node.pid, signal.SIGKILL)
    node.wait()


def wait_for_port(host: str, port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(1)
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"nothing listens on {host}:{port}")


def alive_nodes(address: str) -> int:
    probe = ("import ray; ray.init(address=%r, logging_level='ERROR'); "
             "print(sum(n['Alive'] for n in ray.nodes()))")
    out = subprocess.run([sys.executable, "-c", probe % address], env=cluster_env(), capture_output=True,
                         text=True, timeout=60)
    return int(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else 0


def test_a_two_node_cluster_runs_a_sweep_through_address_and_survives_losing_a_node(veth_namespace,
                                                                                     current_cluster_file, tmp_path):
    """Trials land on both nodes; the second node is lost while a trial runs there (issue 37, class 11):
    that trial is retried from its last checkpoint on the head, the console names the node, and every
    trial finishes. Before: the trial errored (--max-failures 0: Tune retries only for a node it knew was
    preempted) and the sweep ended with it failed."""
    ns, head_ip, node_ip = veth_namespace
    port = random.randrange(20000, 30000)
    address = f"{head_ip}:{port}"
    head = start_node([], "--head", "--include-dashboard=false", f"--node-ip-address={head_ip}",
                      f"--port={port}")
    nodes = [head]
    try:
        wait_for_port(head_ip, port)
        nodes.append(start_node(["ip", "netns", "exec", ns], f"--address={address}",
                                f"--node-ip-address={node_ip}"))
        deadline = time.monotonic() + 90
        while alive_nodes(address) < 2:
            assert time.monotonic() < deadline, "the second node never joined"
            time.sleep(2)
        net = tmp_path / "mine" / "net.py"
        net.parent.mkdir()
        net.write_text((ROOT / "examples" / "tinycnn.py").read_text())
        space = tmp_path / "mine" / "space.yaml"
        space.write_text(f"confirm: false\nparams:\n  model: {net}:tinycnn\n  dataset: synthetic\n  subset: 512\n"
                         "  val_fraction: 0.5\n  epochs: 4\n  batch_size: 32\n  eval_batch_size: 512\n"
                         "  augment: none\n  scheduler: none\n  lr: 0.05\n  measure_latency: false\n"
                         "  depth: {grid: [1, 2]}\n")
        log = tmp_path / "sweep.log"
        sweep = subprocess.Popen(
            [sys.executable, "sweep/run.py", "--space", str(space), "--samples", "2", "--scheduler", "fifo",
             "--address", address, "--storage-path", str(tmp_path), "--name", "cluster"],
            cwd=ROOT, env=cluster_env(), stdout=log.open("w"), stderr=subprocess.STDOUT)
        # issue 37, class 11: once a trial on the second node has reported an epoch, that node is lost (every
        # process of its `ray start` killed), as a reclaimed spot instance would be
        lost = None
        deadline = time.monotonic() + 300
        while lost is None and sweep.poll() is None and time.monotonic() < deadline:
            for result in (tmp_path / "cluster").glob("screen/*/result.json"):
                rows = [json.loads(line) for line in result.read_text().splitlines() if line.endswith("}")]
                if rows and rows[-1]["node_ip"] == node_ip and rows[-1]["epoch"] < 4:
                    lost = result.parent
            time.sleep(0.1)
        assert lost is not None, "no trial ran an epoch on the second node before the sweep ended"
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
        for pid in pids:  # every process of the node (its raylet, workers, `ray start`): gone at once
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        assert pids
        nodes.pop().wait(timeout=30)
        assert sweep.wait(timeout=400) == 0, log.read_text()[-4000:]
        console = log.read_text()
        assert f"lost its node {node_ip}" in console and "it is retried from its last checkpoint on the nodes left" \
            in console, console[-4000:]
        trial_dirs = [p.parent for p in (tmp_path / "cluster").glob("screen/*/result.json")]
        rows = {p: [json.loads(line) for line in p.joinpath("result.json").read_text().splitlines()] for p in trial_dirs}
        last = [r[-1] for r in rows.values()]
        assert len(last) == 4 and all(row["status"] == "finished" for row in last)  # nothing lost
        assert {row["node_ip"] for r in rows.values() for row in r} == {head_ip, node_ip}
        epochs = [row["epoch"] for row in rows[lost]]
        assert rows[lost][-1]["node_ip"] == head_ip and epochs[-1] == 4 and epochs == sorted(epochs), rows[lost]
        assert all((p / "trial_config.json").is_file() for p in trial_dirs)  # also from the other node
        configs = [json.loads((p / "trial_config.json").read_text())["config"] for p in trial_dirs]
        assert sorted(c["depth"] for c in configs) == [1, 1, 2, 2] and {c["model"] for c in configs} == {f"{net}:tinycnn"}
    finally:
        for node in reversed(nodes):
            stop_node(node)
