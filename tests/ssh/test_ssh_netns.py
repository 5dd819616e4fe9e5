"""SSHCluster across two real hosts: network namespaces (see tests/integration/test_netns.py for the topology),
an sshd in ``sched`` (10.200.0.1) and one in ``w1`` (10.200.0.2), the caller in ``client`` (10.200.0.4).

Tasks run on the worker host and reach the scheduler over the bridge; when the caller's cable is pulled (it
loses the network: no FIN, no RST), every remote process ends within the death timeout, by the tethers'
liveness check, long before sshd or TCP would notice.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from tests.helpers import wait_gone, wait_until
from tests.integration.test_netns import net  # noqa: F401  (the namespaces fixture)
from tests.ssh.test_ssh_cluster import remote_processes

pytestmark = pytest.mark.timeout(180)

DEATH_TIMEOUT = 6.0
PORT = 2222

CALLER = textwrap.dedent("""
    import json, socket, sys
    from scaler_jupyter import SSHCluster

    def own_address(scheduler_host):
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.connect((scheduler_host, 9))  # no packet is sent: this only picks the route
        return probe.getsockname()[0]

    hosts, options, death_timeout = json.loads(sys.argv[1])
    cluster = SSHCluster(hosts, workers_per_host=2, ssh_options=options, death_timeout=death_timeout)
    with cluster.get_client() as client:
        seen = sorted(set(client.map(own_address, ["10.200.0.1"] * 20, timeout=60)))
    print(json.dumps({"record": cluster.record(), "seen": seen}), flush=True)
    sys.stdin.readline()  # until the test is done with it
""")


def listening(namespace: str, port: int) -> bool:
    done = subprocess.run(["ip", "netns", "exec", namespace, "ss", "-ltnH", f"sport = :{port}"],
                          capture_output=True, text=True, timeout=20)
    return bool(done.stdout.strip())


def test_workers_on_another_host_and_a_caller_that_loses_the_network(net, sshd_factory):  # noqa: F811
    servers = []
    for role in ("sched", "w1"):
        server = sshd_factory.start(net.address(role), PORT, prefix=("ip", "netns", "exec", net.namespaces[role]))
        wait_until(lambda ns=net.namespaces[role]: listening(ns, PORT), 20, f"sshd to listen in {role}")
        servers.append(server)
    spec = json.dumps([[s.destination for s in servers], servers[0].options(known_hosts=None), DEATH_TIMEOUT])
    caller = subprocess.Popen(["ip", "netns", "exec", net.namespaces["client"], sys.executable, "-c", CALLER, spec],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        report = json.loads(caller.stdout.readline() or "null")
        assert report is not None, "the caller failed to start its cluster"
        record = report["record"]
        assert record["address"].startswith(f"tcp://{net.address('sched')}:")  # the host's address, not 0.0.0.0
        assert report["seen"] == [net.address("w1")], "tasks ran elsewhere than on the worker host"
        remote = remote_processes(sshd_factory)
        assert {p["pid"] for p in record["processes"]} <= {p.pid for p in remote}

        net.cable("client", up=False)
        engine = [p for p in remote if p.name() != "sshd"]  # sshd's own session processes wait for TCP to tell
        left = wait_gone(engine, DEATH_TIMEOUT + 3)
        assert not left, f"remote processes alive {DEATH_TIMEOUT + 3:g}s after the caller lost the network"
        # the cable back, the caller gone: its sockets close, and sshd's sessions end with them
        net.cable("client", up=True)
        caller.kill()
        assert not wait_gone(remote, 30), "sshd's sessions outlived their connections"
    finally:
        net.cable("client", up=True)
        caller.kill()
        caller.wait(30)
        caller.stdout.close()
        caller.stdin.close()
        for server in servers:
            server.stop()
