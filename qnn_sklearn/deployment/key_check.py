"""Evaluation keys checked at upload, in a child process with a time limit.

concrete-python checks neither that bytes are evaluation keys before it parses them for a long
time (a truncated upload kept a thread busy for 30 s and printed megabytes of capnp traces),
nor that keys belong to the circuit (another model's keys crash the runtime when it runs). So a
key upload is accepted only after a child process has

1. checked their length against their header and deserialized them (malformed bytes:
   :class:`KeyCheckError` with status 400), and
2. run the circuit once with them on the probe ciphertext uploaded next to them, an encryption
   made by the client (:meth:`FHEModelClient.quantize_encrypt_serialize` of any row). The
   circuit accepts the probe only if it has this circuit's input type; a run then goes through
   every bootstrap and key switch with the uploaded keys, so keys whose parameters do not fit
   the circuit crash or fail here, in the child (status 422), not later in a shared worker.

Keys of another circuit that happen to have the same parameters pass; they cannot crash the
runtime, and only their uploader gets wrong results. The child's file descriptor 2 goes to a
file, of which the error message keeps a short summary: the C++ runtime writes its traces
there, not through Python.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import tempfile
from pathlib import Path

from . import framing
from .executor import worker_context
from .fhe_model import FHEModelServer
from .lifetime import die_with

UPLOAD_PARTS = 2
"""A key upload is ``framing.pack([evaluation_keys, probe_ciphertext])``."""

_MAX_VERDICT_BYTES = 1 << 16
_MAX_SEGMENTS = 512  # Cap'n Proto's own limit
_SUMMARY_CHARS = 300
_SCAN_BYTES = 1 << 16
_TELLING = re.compile(r"\{what\}|error|exception|premature|fault|abort", re.IGNORECASE)


class KeyCheckError(ValueError):
    """Uploaded keys were refused; ``status`` is the HTTP status that says why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _send(connection, status: int, message: str) -> None:
    """The child's verdict, as JSON: the parent unpickles nothing from a process that has just
    parsed untrusted bytes."""
    connection.send_bytes(json.dumps({"status": status, "message": message[:4000]}).encode())


def _receive(connection) -> tuple[int, str]:
    """The child's verdict; ``EOFError`` when it died first or sent anything else."""
    try:
        verdict = json.loads(connection.recv_bytes(maxlength=_MAX_VERDICT_BYTES))
        status, message = verdict["status"], verdict["message"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise EOFError("No valid verdict from the key check.") from error
    if status not in (201, 400, 422) or not isinstance(message, str):
        raise EOFError("No valid verdict from the key check.")
    return status, message


def _check_message_length(keys: bytes) -> None:
    """Refuse keys whose length differs from what their Cap'n Proto header declares.

    Serialized keys are one Cap'n Proto message: ``count - 1`` (u32), ``count`` segment sizes
    in 8-byte words (u32 each), padding to 8 bytes, then the segments. A truncated upload is
    refused here in microseconds; concrete's parser takes 15-30 s to find out.
    """
    if len(keys) < 8:
        raise ValueError("These bytes are not evaluation keys: shorter than a message header.")
    count = struct.unpack_from("<I", keys, 0)[0] + 1
    header = (4 * (1 + count) + 7) // 8 * 8
    if count > _MAX_SEGMENTS or header > len(keys):
        raise ValueError(f"These bytes are not evaluation keys: {count} message segments.")
    declared = header + 8 * sum(struct.unpack_from(f"<{count}I", keys, 4))
    if declared != len(keys):
        raise ValueError(
            f"These evaluation keys are truncated or padded: their header declares {declared} "
            f"bytes, the upload holds {len(keys)}. Upload the whole serialized keys."
        )


def _check_in_child(model_dir, upload, keys_out, stderr_path, tmp_dir, service_pid, connection):
    die_with(service_pid)
    fd = os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(fd, 2)
    os.close(fd)
    tempfile.tempdir = tmp_dir  # what a crash leaves of concrete's extraction is removed with it
    try:
        parts = framing.unpack(Path(upload).read_bytes(), max_items=UPLOAD_PARTS)
        if len(parts) != UPLOAD_PARTS:
            raise framing.FramingError(
                f"The upload holds {len(parts)} value(s): send framing.pack([evaluation_keys, "
                "probe_ciphertext]) (FHEHTTPClient does)."
            )
        _check_message_length(parts[0])
        keys = FHEModelServer.load_evaluation_keys(parts[0])
    except ValueError as error:
        _send(connection, 400, str(error))
        return
    try:
        with FHEModelServer(model_dir) as server:
            server.run(framing.pack([parts[1]]), keys)
    except ValueError as error:
        _send(
            connection,
            422,
            f"The circuit refused these keys or the probe ciphertext ({error}): upload the "
            "evaluation keys and an encryption of this model's client.",
        )
        return
    Path(keys_out).write_bytes(parts[0])
    _send(connection, 201, "")


def _stderr_summary(path: Path) -> str:
    """One telling line of what the runtime wrote to the child's stderr, and its size."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as file:
            head = file.read(_SCAN_BYTES)
            file.seek(max(len(head), size - _SCAN_BYTES))
            tail = file.read(_SCAN_BYTES)
    except FileNotFoundError:
        return ""
    lines = [line.strip() for line in (head + tail).decode(errors="replace").splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        return ""
    telling = next((line for line in lines if _TELLING.search(line)), lines[-1])
    return f" The FHE runtime wrote {size} bytes to stderr, e.g.: {telling[:_SUMMARY_CHARS]}"


def check_key_upload(
    model_dir, upload: Path, keys_out: Path, work_dir: Path, timeout_s: float
) -> None:
    """Check a key upload in a child process; on success the keys alone are in ``keys_out``
    (on failure, nothing is).

    Blocks the calling thread (run it off the event loop) for at most about ``timeout_s``.
    Raises :class:`KeyCheckError` naming why the keys were refused.
    """
    work_dir = Path(tempfile.mkdtemp(prefix="check-", dir=work_dir))
    stderr_path = work_dir / "stderr.txt"
    context = worker_context()
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(
        target=_check_in_child,
        args=(
            str(model_dir),
            str(upload),
            str(keys_out),
            str(stderr_path),
            str(work_dir),
            os.getpid(),
            sender,
        ),
        name="qnn-sklearn-key-check",
        daemon=True,
    )
    outcome, timed_out = None, False
    try:
        process.start()
        sender.close()
        if receiver.poll(timeout_s):
            outcome = _receive(receiver)
        else:
            timed_out = process.is_alive()
    except EOFError:  # the child died before it answered
        pass
    finally:
        receiver.close()
        process.join(0 if timed_out else 5)  # a child that answered is exiting
        if process.is_alive():
            process.kill()
            process.join()
        summary = _stderr_summary(stderr_path)
        shutil.rmtree(work_dir, ignore_errors=True)
        if outcome is None or outcome[0] != 201:
            Path(keys_out).unlink(missing_ok=True)
    if timed_out:
        raise KeyCheckError(
            422,
            f"These evaluation keys could not be checked within {timeout_s:g} s: upload the "
            "keys of this model's client, or ask the operator for a longer --key-check-s."
            + summary,
        )
    if outcome is None:
        raise KeyCheckError(
            422,
            f"These evaluation keys crashed the FHE runtime (exit code {process.exitcode}) on "
            "this model's circuit: they belong to another model. Upload the keys of this "
            "model's client." + summary,
        )
    status, message = outcome
    if status != 201:
        raise KeyCheckError(status, message + summary)
