"""The one pickling rule: what a worker imports by name, what travels by value; and the one content id.

A pickle is judged where it matters, in another process that has only what a worker has:
the standard library, cloudpickle and this package, not the pickling process's ``__main__``
or its modules shipped by value.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap

import cloudpickle
import pytest

from scaler_jupyter.protocol import pickling, serialization
from scaler_jupyter.protocol.messages import CONTENT_ID_BYTES

RUN_TIMEOUT = 60  # seconds for a fresh interpreter to pickle or unpickle one small object


def call_in_fresh_process(stream: bytes, *args) -> str:
    """Unpickle ``stream`` in a new interpreter started elsewhere, call it with ``args``, return its repr."""
    loader = "import pickle, sys; function = pickle.loads(sys.stdin.buffer.read()); print(repr(function(*ARGS)))"
    done = subprocess.run([sys.executable, "-c", loader.replace("ARGS", repr(args))], input=stream,
                          capture_output=True, timeout=RUN_TIMEOUT, cwd="/", check=False)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode().strip()


def test_what_a_script_defines_travels_by_value(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent("""
        import sys
        from scaler_jupyter.protocol import pickling

        class Scale:
            def __init__(self, factor):
                self.factor = factor

        def scaled(x):
            return Scale(3).factor * x

        sys.stdout.buffer.write(pickling.dumps(scaled))
    """))
    made = subprocess.run([sys.executable, str(script)], capture_output=True, timeout=RUN_TIMEOUT, check=False)
    assert made.returncode == 0, made.stderr.decode()
    assert call_in_fresh_process(made.stdout, 14) == "42"


def test_a_module_registered_by_value_travels_by_value(tmp_path, monkeypatch):
    (tmp_path / "shipped_here.py").write_text("def greet(name):\n    return f'hello {name}'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import shipped_here

    assert b"shipped_here" in pickle.dumps(shipped_here.greet), "by reference, the C pickler names the module"
    assert pickling.import_path(shipped_here.greet) == "shipped_here:greet"
    cloudpickle.register_pickle_by_value(shipped_here)
    try:
        stream = pickling.dumps(shipped_here.greet)
        assert pickling.import_path(shipped_here.greet) is None
    finally:
        cloudpickle.unregister_pickle_by_value(shipped_here)
        del sys.modules["shipped_here"]
    assert call_in_fresh_process(stream, "worker") == "'hello worker'"  # a process without tmp_path on its path


def test_what_a_worker_can_import_travels_by_reference_as_the_c_pickler_writes_it():
    for obj in (textwrap.dedent, {"a": [1, 2.5, "three"]}, pytest.approx(1.0)):
        assert pickling.dumps(obj) == pickle.dumps(obj, protocol=pickling.PROTOCOL)
    assert pickling.import_path(textwrap.dedent) == "textwrap:dedent"


def test_what_only_cloudpickle_pickles_travels_by_value():
    offset = 40

    def local(x):
        return x + offset

    assert call_in_fresh_process(pickling.dumps(local), 2) == "42"
    assert pickling.import_path(local) is None
    assert call_in_fresh_process(pickling.dumps(lambda: "lambda")) == "'lambda'"


def test_large_buffers_go_out_of_band_once_whichever_pickler_wrote_the_stream():
    block = bytearray(b"x" * 100_000)
    for obj in ((pickle.PickleBuffer(block), "by reference"), (pickle.PickleBuffer(block), lambda: "by value")):
        buffers: list[pickle.PickleBuffer] = []
        stream = pickling.dumps(obj, buffers)
        assert len(buffers) == 1 and len(stream) < 1_000
        loaded = pickle.loads(stream, buffers=buffers)
        assert bytes(loaded[0]) == bytes(block)
    assert len(pickling.dumps(pickle.PickleBuffer(block))) > len(block), "without a list, the buffer is in-band"


def test_a_content_id_depends_on_the_content_only():
    whole = pickling.content_id(b"abcdef")
    assert len(whole) == CONTENT_ID_BYTES
    assert pickling.content_id(b"abc", memoryview(b"def")) == whole == pickling.content_id(bytearray(b"abcdef"))
    assert pickling.content_id(b"abcdeg") != whole


def test_a_payload_s_id_is_the_content_id_of_its_parts():
    payload = serialization.dumps((pickle.PickleBuffer(bytearray(200_000)), "small"))
    assert len(payload.parts) == 2
    assert serialization.content_id(*payload.parts) == pickling.content_id(b"".join(bytes(p) for p in payload.parts))
