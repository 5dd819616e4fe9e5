"""SSHCluster's host strings: ``[user@]host[:port]``, as ``%scaler start --ssh`` and ``SSHCluster`` take them."""

from __future__ import annotations

import pytest

from scaler_jupyter.ssh_cluster import Host, SSHSpec


@pytest.mark.parametrize(("text", "host", "options"), [
    ("node1", Host("node1"), {}),
    ("node1:2222", Host("node1", 2222), {"port": 2222}),
    ("alice@node1", Host("node1", None, "alice"), {"username": "alice"}),
    ("alice@10.0.0.5:22", Host("10.0.0.5", 22, "alice"), {"port": 22, "username": "alice"}),
    ("[::1]:2222", Host("::1", 2222), {"port": 2222}),
    ("fe80::1", Host("fe80::1"), {}),
])
def test_a_host_string_gives_the_host_port_and_user(text, host, options):
    parsed = Host.parse(text)
    assert parsed == host and parsed.options() == options
    assert Host.parse(str(parsed)) == parsed


@pytest.mark.parametrize("text", ["", "node1:ssh", "alice@", "[::1]:x"])
def test_a_malformed_host_string_is_refused(text):
    with pytest.raises(ValueError, match="not an SSH host"):
        Host.parse(text)


def test_a_spec_says_itself_as_the_supervisors_arguments():
    spec = SSHSpec(("head", "node1:2222"), python="/opt/py/bin/python", ssh_config="/tmp/cfg")
    assert spec.arguments() == ["--ssh", "head,node1:2222", "--python", "/opt/py/bin/python",
                                "--ssh-config", "/tmp/cfg"]
    assert SSHSpec(("head",)).arguments() == ["--ssh", "head"]
