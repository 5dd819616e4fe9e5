"""A real IPython kernel driven over the Jupyter protocol, as a notebook front end drives it.

``Kernel.run(code)`` sends one execute request and collects what the cell printed,
displayed and raised until the kernel is idle again, so a test reads like a notebook:
``out = kernel.run("%scaler start -n 2"); assert "2 workers" in out.text``.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import time
from pathlib import Path

from jupyter_client.manager import KernelManager


@dataclasses.dataclass
class CellOutput:
    """What one executed cell produced, in arrival order."""

    status: str = ""  # "ok", "error" or "aborted"
    streams: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (stdout|stderr, text)
    displays: list[dict] = dataclasses.field(default_factory=list)  # mime bundles of display_data
    result: dict | None = None  # the execute_result's mime bundle
    error: dict | None = None  # ename, evalue, traceback
    comm_messages: list[dict] = dataclasses.field(default_factory=list)  # comm_open / comm_msg contents
    elapsed: float = 0.0  # seconds from the request to the kernel's idle

    @property
    def stdout(self) -> str:
        return "".join(text for name, text in self.streams if name == "stdout")

    @property
    def stderr(self) -> str:
        return "".join(text for name, text in self.streams if name == "stderr")

    @property
    def text(self) -> str:
        """Everything a reader would see as text: streams, text/plain reprs and the error."""
        parts = [text for _, text in self.streams]
        parts += [bundle.get("text/plain", "") for bundle in self.displays]
        if self.result:
            parts.append(self.result.get("text/plain", ""))
        if self.error:
            parts.append(f"{self.error['ename']}: {self.error['evalue']}")
        return "\n".join(parts)


class Kernel:
    """A kernel process of this interpreter, started in ``cwd`` (a folder of the test's, not the repository)."""

    def __init__(self, cwd: str | os.PathLike, env: dict[str, str] | None = None, timeout: float = 60.0) -> None:
        self.cwd = Path(cwd)
        self.manager = KernelManager(kernel_name="python3", transport="ipc", ip=str(self.cwd / "kernel"))
        self.manager.start_kernel(cwd=str(self.cwd), env={**os.environ, **(env or {})})
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=timeout)

    @property
    def pid(self) -> int:
        return self.manager.provisioner.pid

    def run(self, code: str, timeout: float = 60.0, allow_error: bool = False) -> CellOutput:
        """Execute ``code`` as one cell; fail on an error unless ``allow_error``."""
        output = self.execute(code, timeout)
        if output.error and not allow_error:
            raise AssertionError(f"cell failed: {output.error['ename']}: {output.error['evalue']}\n"
                                 + "\n".join(output.error["traceback"]) + f"\n--- output:\n{output.text}")
        return output

    def execute(self, code: str, timeout: float = 60.0) -> CellOutput:
        """Send ``code`` and collect its IOPub messages until the kernel is idle for it."""
        start = time.monotonic()
        msg_id = self.client.execute(code)
        return self.collect(msg_id, start, timeout)

    def collect(self, msg_id: str, start: float, timeout: float) -> CellOutput:
        output = CellOutput()
        deadline = start + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"the cell did not finish within {timeout:g}s; so far:\n{output.text}")
            try:
                message = self.client.get_iopub_msg(timeout=remaining)
            except queue.Empty:
                continue
            if message["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = message["msg_type"], message["content"]
            if kind == "stream":
                output.streams.append((content["name"], content["text"]))
            elif kind in ("display_data", "update_display_data"):
                output.displays.append(content["data"])
            elif kind == "execute_result":
                output.result = content["data"]
            elif kind == "error":
                output.error = content
            elif kind in ("comm_open", "comm_msg"):
                output.comm_messages.append(content)
            elif kind == "status" and content["execution_state"] == "idle":
                break
        reply = self.client.get_shell_msg(timeout=max(1.0, deadline - time.monotonic()))
        while reply["parent_header"].get("msg_id") != msg_id:  # e.g. a second kernel_info_reply of wait_for_ready
            reply = self.client.get_shell_msg(timeout=max(1.0, deadline - time.monotonic()))
        output.status = reply["content"]["status"]
        output.elapsed = time.monotonic() - start
        return output

    def interrupt(self) -> None:
        self.manager.interrupt_kernel()

    def shutdown(self) -> None:
        """Stop the kernel (its own children die with it) and close the channels."""
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=False)
        self.manager.cleanup_resources()
