"""The short path of a task on one host: Unix-socket links, sends from the calling thread, futures completed
without a thread hand-over, on a real cluster."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading

import cloudpickle
import pytest

from scaler_jupyter import Client, LocalCluster
from scaler_jupyter.cluster import local_address_of
from scaler_jupyter.errors import ConnectionLostError
from scaler_jupyter.protocol import encode
from scaler_jupyter.protocol.channel import Channel
from scaler_jupyter.protocol.messages import PROTOCOL_VERSION, ClientHello
from scaler_jupyter.protocol.unix_link import check_private, connect
from tests.helpers import free_port

pytestmark = pytest.mark.timeout(90)

cloudpickle.register_pickle_by_value(sys.modules[__name__])

RESULT_TIMEOUT = 20.0


def square(x):
    return x * x


def print_then_return(text):
    print(text)
    return text


def scheduler_address_in_task():
    from scaler_jupyter import task_context

    return task_context.scheduler_address()


def sleep_long():
    import time

    time.sleep(10 * RESULT_TIMEOUT)


def test_local_cluster_links_run_over_a_private_unix_socket(cluster):
    assert cluster.address.startswith("tcp://127.0.0.1:")  # what others connect to is unchanged
    assert cluster.local_address.startswith("unix://")
    path = cluster.local_address[len("unix://"):]
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    folder = os.stat(os.path.dirname(path))
    assert folder.st_uid == os.getuid() and stat.S_IMODE(folder.st_mode) == 0o700
    assert local_address_of(cluster.address) == cluster.local_address
    assert local_address_of("tcp://127.0.0.1:1") == "tcp://127.0.0.1:1"  # not a cluster of this process


def test_workers_and_tasks_use_the_local_address(client, cluster):
    assert client.submit(scheduler_address_in_task).result(RESULT_TIMEOUT) == cluster.local_address
    assert client.address == cluster.address


def test_the_tcp_address_still_serves_clients(cluster, tmp_path):
    """A client that does not know the local address (another process, another host) joins over TCP."""
    code = (f"from scaler_jupyter import Client\n"
            f"from scaler_jupyter.cluster import local_address_of\n"
            f"assert local_address_of({cluster.address!r}) == {cluster.address!r}\n"
            f"with Client({cluster.address!r}, timeout=20) as client:\n"
            f"    print(client.submit(pow, 3, 2).result(20))\n")
    # its own runtime folder: it cannot read this host's cluster files, as a process of another host
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "9"


def test_another_process_of_this_host_finds_the_local_link_in_the_cluster_file(cluster):
    """A kernel given a local cluster's TCP address (``%scaler connect``) takes its Unix socket."""
    code = (f"from scaler_jupyter import Client\n"
            f"from scaler_jupyter.cluster import local_address_of\n"
            f"assert local_address_of({cluster.address!r}) == {cluster.local_address!r}\n"
            f"with Client({cluster.address!r}, timeout=20) as client:\n"
            f"    print(client.submit(pow, 3, 2).result(20))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "9"


def test_many_threads_submit_at_once(client):
    """Sends come from the calling threads, under the connection's lock: none is lost, none garbled."""
    results: dict[int, list] = {}

    def submit_many(thread: int) -> None:
        futures = [client.submit(square, thread * 1000 + i) for i in range(100)]
        results[thread] = [f.result(RESULT_TIMEOUT) for f in futures]

    threads = [threading.Thread(target=submit_many, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(results) == list(range(8))
    for n, values in results.items():
        assert values == [(n * 1000 + i) ** 2 for i in range(100)]


def test_done_callbacks_run_in_the_delivery_thread(client):
    """A future with a done-callback is completed by the delivery thread, never the network thread, so a
    slow callback cannot stall heartbeats; one without completes however is quickest."""
    threads: list[str] = []
    callback_ran = threading.Event()

    def callback(future):
        threads.append(threading.current_thread().name)
        callback_ran.set()

    future = client.submit(square, 7)
    future.add_done_callback(callback)
    assert future.result(RESULT_TIMEOUT) == 49
    assert callback_ran.wait(RESULT_TIMEOUT)
    assert threads == ["scaler-jupyter-delivery"]
    assert client.submit(square, 8).result(RESULT_TIMEOUT) == 64


def test_printed_output_comes_before_the_result(client, capfd):
    for i in range(20):
        assert client.submit(print_then_return, f"line {i}").result(RESULT_TIMEOUT) == f"line {i}"
        assert f"line {i}" in capfd.readouterr().out  # printed before its future completed


def test_closing_removes_the_private_folder():
    with LocalCluster(n_workers=1, timeout=30) as local:
        folder = os.path.dirname(local.local_address[len("unix://"):])
        with Client(local.address, timeout=30) as client:
            assert client.submit(square, 3).result(RESULT_TIMEOUT) == 9
    assert not os.path.exists(folder)


def test_the_scheduler_refuses_a_local_address_others_could_reach(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    with pytest.raises(PermissionError, match="mode 0700"):
        check_private(f"unix://{shared}/scheduler")
    with pytest.raises(ValueError, match="unix://"):
        check_private("tcp://127.0.0.1:1")
    done = subprocess.run([sys.executable, "-m", "scaler_jupyter", "scheduler", f"tcp://127.0.0.1:{free_port()}",
                           "--local-address", f"unix://{shared}/scheduler", "--log-level", "ERROR"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "mode 0700" in done.stderr


def test_a_client_on_the_local_link_hears_at_once_that_its_scheduler_died():
    """The local link ends with the scheduler: pending futures fail now, not after the client's timeout."""
    with LocalCluster(n_workers=1, timeout=30) as local:
        client = Client(local.address, timeout=60)
        try:
            future = client.submit(sleep_long)
            os.kill(local.pids[0], 9)
            with pytest.raises(ConnectionLostError, match="closed the connection"):
                future.result(RESULT_TIMEOUT)  # well under the 60 s of silence that would say it otherwise
        finally:
            client.shutdown(wait=False, cancel_futures=True)


def test_garbage_on_the_local_socket_costs_its_sender_only(cluster, client):
    """Bytes that are no message end the connection that sent them; an undecodable message is dropped;
    the scheduler serves on."""
    with connect(cluster.local_address) as raw:
        raw.sendall(b"\x00\x00\x00\x00" + b"garbage")  # a message of no frames: not a stream of ours
        raw.settimeout(RESULT_TIMEOUT)
        assert raw.recv(1) == b""  # the scheduler closed it
    with connect(cluster.local_address) as raw:
        channel = Channel(raw.fileno(), raw.fileno())
        channel.send([b"\xc1 not msgpack"], block=True)
        channel.send(encode(ClientHello(PROTOCOL_VERSION, "raw", "h", os.getpid(), False, "")), block=True)
        assert channel.wait_readable(RESULT_TIMEOUT)
        assert channel.receive()  # its welcome: the link outlived the bad message
    assert client.submit(square, 5).result(RESULT_TIMEOUT) == 25
