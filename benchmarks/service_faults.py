"""Faults and attacks against ``qnn-sklearn serve`` on 127.0.0.1 (issue 13, section 3).

Saves a model with FHEModelDev (full run: the README's iris classifier, 63 MB of evaluation
keys; ``--smoke``: a tiny 3-input network), starts ``python -m qnn_sklearn.deployment.cli serve``
as a subprocess with 2 workers, and measures, each with a bounded number of requests:

- ownership: another client's DELETE and predict with a stolen key id; a client's uploads
  beyond ``--max-keys`` (did the victim's keys survive?);
- a truncated key upload (64 KB of valid keys, framed with a valid probe): its status and time,
  the slowest ``/health`` meanwhile, the same with 3 at once, and the bytes the service wrote to
  its stderr;
- keys of another model at upload; an innocent request in flight when a worker is killed; the
  next request after a worker was killed while idle;
- the service's RSS during 4 concurrent large key uploads, and 5 s after;
- helper processes and files left 5 s after ``kill -9`` of the service; copies of the
  extracted circuit after 5 pool rebuilds;
- key ids in the access log; the size of the answer to a 100 KB key id.

Traffic goes to loopback only. The "before" column is quoted from issue 13 (measured at the
previous service, iris model, 2 workers); ``uptime`` is recorded before and after the run.

Usage: ``python benchmarks/service_faults.py [--smoke]``; writes ``results/service_faults.json``
(``service_faults_smoke.json``) and a markdown table next to it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from qnn_sklearn.deployment import FHEHTTPClient, FHEModelClient, FHEModelDev, framing

RESULTS = Path(__file__).resolve().parent / "results"
BEFORE = {  # issue 13, section 3, measured on the service before this change
    "stolen_key_id_delete_status": "204 (anyone can delete)",
    "victim_predict_after_attacker_uploads": "404 (evicted by 16 uploads)",
    "truncated_upload_s": 30.0,
    "truncated_upload_max_health_s": 29.7,
    "truncated_x3_max_health_s": "> 60",
    "stderr_bytes_per_truncated_upload": 7_000_000,
    "foreign_keys_upload_status": 201,
    "innocent_request_when_worker_crashes": 422,
    "request_after_idle_worker_killed": 422,
    "rss_added_by_4_uploads_mb": 3600,
    "rss_held_after_uploads_mb": 2000,
    "helpers_alive_after_kill9": "forkserver, resource tracker, workers",
    "files_left_after_kill9": "key directory",
    "extracted_circuits_after_rebuilds": 27,
    "key_ids_in_access_log": "yes",
    "answer_bytes_for_100kb_key_id": "> 100,000 (echoed)",
}


def _models(directory: Path, smoke: bool):
    """(model dir, other model's dir); the other circuit has other crypto parameters."""
    import torch

    from qnn_sklearn.torch import compile_torch_model

    def tiny(seed, n_features, p_error=None):
        torch.manual_seed(seed)
        net = torch.nn.Sequential(
            torch.nn.Linear(n_features, 6), torch.nn.ReLU(), torch.nn.Linear(6, 2)
        ).eval()
        inputset = np.random.default_rng(seed).normal(size=(100, n_features)).astype(np.float32)
        return compile_torch_model(net, inputset, n_bits=2, p_error=p_error)

    other = FHEModelDev(directory / "other", tiny(7, 4, p_error=2**-3)).save()
    if smoke:
        return FHEModelDev(directory / "model", tiny(5, 3)).save(), other
    from sklearn.datasets import load_iris
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    from qnn_sklearn import NeuralNetClassifier

    X, y = load_iris(return_X_y=True)
    X_train, _, y_train, _ = train_test_split(X, y, random_state=0)
    X_train = StandardScaler().fit_transform(X_train).astype(np.float32)
    model = NeuralNetClassifier(module__n_layers=2, max_epochs=40, lr=0.02, random_state=0)
    model.fit(X_train, y_train).compile(X_train)
    return FHEModelDev(directory / "model", model).save(), other


class Service:
    def __init__(self, model_dir: Path, directory: Path, *options: str):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.tmp = Path(tempfile.mkdtemp(prefix="tmp-", dir=directory))
        self.stderr = directory / f"stderr-{self.port}.txt"
        self.stdout = directory / f"stdout-{self.port}.txt"
        command = [sys.executable, "-m", "qnn_sklearn.deployment.cli", "serve", str(model_dir)]
        command += ["--port", str(self.port), "--workers", "2", *options]
        env = {**os.environ, "TMPDIR": str(self.tmp), "PYTHONWARNINGS": "ignore"}
        with open(self.stdout, "wb") as out, open(self.stderr, "wb") as err:
            self.process = subprocess.Popen(command, env=env, stdout=out, stderr=err)
        deadline = time.monotonic() + 300
        while _get(self.url + "/health")[0] != 200:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"The service did not start: {self.stderr.read_text()[-2000:]}")
            time.sleep(0.5)

    def log(self) -> str:
        return self.stdout.read_text(errors="replace") + self.stderr.read_text(errors="replace")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def descendants(self) -> set[int]:
        children: dict[int, list[int]] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(stat.parent.name))
        found, todo = set(), [self.process.pid]
        while todo:
            for child in children.get(todo.pop(), []):
                found.add(child)
                todo.append(child)
        return found

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


def _get(url: str, timeout: float = 60) -> tuple[int, float]:
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            response.read()
            return response.status, time.perf_counter() - start
    except urllib.error.HTTPError as error:
        return error.code, time.perf_counter() - start
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, time.perf_counter() - start


def _post(url: str, body, headers: dict, length: int | None = None) -> tuple[int, bytes, float]:
    headers = {"Content-Type": "application/octet-stream", **headers}
    if length is not None:
        headers["Content-Length"] = str(length)
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            return response.status, response.read(), time.perf_counter() - start
    except urllib.error.HTTPError as error:
        return error.code, error.read(), time.perf_counter() - start
    except (urllib.error.URLError, ConnectionError) as error:
        return 0, str(error).encode(), time.perf_counter() - start


class HealthProbe:
    """Polls ``/health`` every 0.1 s in a thread; ``max_s`` is the slowest answer."""

    def __init__(self, url: str):
        self.url, self.max_s, self._stop = url + "/health", 0.0, threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.max_s = max(self.max_s, _get(self.url, timeout=120)[1])
            time.sleep(0.1)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _status(call) -> int:
    from qnn_sklearn.deployment import HTTPServiceError

    try:
        call()
        return 200
    except HTTPServiceError as error:
        return error.status


def _in_parallel(calls) -> list:
    results = [None] * len(calls)

    def run(index):
        results[index] = calls[index]()

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def measure(model_dir: Path, other_dir: Path, directory: Path, smoke: bool) -> dict:
    key_dir = directory / "private_keys"
    max_keys = 3 if smoke else 16
    upload_mb = 40 if smoke else 400
    service = Service(
        model_dir, directory, "--max-keys", str(max_keys), "--max-key-mb", str(upload_mb + 1)
    )
    figures: dict = {}
    model_client = FHEModelClient(model_dir, key_dir=key_dir)
    X = np.random.default_rng(0).normal(size=(2, *model_client.module.input_shape))
    victim, attacker = (FHEHTTPClient(service.url, model_client) for _ in range(2))
    upload = victim.key_upload()
    keys, probe = framing.unpack(upload)
    figures["evaluation_keys_bytes"] = len(keys)
    figures["upload_s"] = _timed(victim.upload_evaluation_keys)
    attacker.key_id = victim.key_id
    figures["stolen_key_id_delete_status"] = _status(attacker.delete_evaluation_keys)
    figures["stolen_key_id_predict_status"] = _status(lambda: attacker.predict(X))
    for _ in range(max_keys + 1):
        attacker.upload_evaluation_keys(force=True)
    figures["victim_predict_after_attacker_uploads"] = _status(lambda: victim.predict(X))

    truncated = framing.pack([keys[: 1 << 16], probe])
    headers = {"X-Client-Token": attacker.client_token}
    stderr_before = service.stderr.stat().st_size
    with HealthProbe(service.url) as health:
        status, _, seconds = _post(service.url + "/keys", truncated, headers)
    figures["truncated_upload_status"], figures["truncated_upload_s"] = status, seconds
    figures["truncated_upload_max_health_s"] = health.max_s
    figures["stderr_bytes_per_truncated_upload"] = service.stderr.stat().st_size - stderr_before
    with HealthProbe(service.url) as health:
        statuses = _in_parallel([lambda: _post(service.url + "/keys", truncated, headers)] * 3)
    figures["truncated_x3_statuses"] = [status for status, _, _ in statuses]
    figures["truncated_x3_max_health_s"] = health.max_s

    other_keys = FHEModelClient(other_dir, key_dir=key_dir).get_serialized_evaluation_keys()
    figures["foreign_keys_upload_status"] = _post(
        service.url + "/keys", framing.pack([other_keys, probe]), headers
    )[0]

    many = np.random.default_rng(1).normal(size=(16, *model_client.module.input_shape))
    # Another model's keys no longer reach /predict: a worker is killed under the request.
    figures["innocent_request_when_worker_crashes"] = _status_when_killing(
        service, lambda: victim.predict(many)
    )
    _kill_a_worker(service)
    time.sleep(1)
    figures["request_after_idle_worker_killed"] = _status(lambda: victim.predict(X))
    for _ in range(4):
        _kill_a_worker(service)
        time.sleep(1)
        victim.predict(X[:1])
    figures["extracted_circuits_after_rebuilds"] = len(list(service.tmp.rglob("sharedlib.so")))

    chunk = os.urandom(1 << 20)
    rss_before = service.rss_mb()
    peak = [rss_before]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], service.rss_mb())
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()

    def upload():
        body = (chunk for _ in range(upload_mb))
        return _post(service.url + "/keys", body, headers, upload_mb << 20)

    with HealthProbe(service.url) as health:
        statuses = _in_parallel([upload] * 4)
    stop.set()
    sampler.join()
    time.sleep(5)
    figures["large_uploads"] = f"4 x {upload_mb} MB of garbage keys"
    figures["large_upload_statuses"] = [status for status, _, _ in statuses]
    figures["large_uploads_max_health_s"] = health.max_s
    figures["rss_before_uploads_mb"] = round(rss_before, 1)
    figures["rss_added_by_4_uploads_mb"] = round(peak[0] - rss_before, 1)
    figures["rss_held_after_uploads_mb"] = round(service.rss_mb() - rss_before, 1)

    status, answer, _ = _post(
        service.url + "/predict", b"x", {**headers, "X-Key-Id": "7" * 100_000}
    )
    figures["answer_to_100kb_key_id"] = f"{status}, {len(answer)} bytes"
    figures["answer_bytes_for_100kb_key_id"] = len(answer)
    log = service.log()
    figures["key_ids_in_access_log"] = sum(
        log.count(key_id) for key_id in {victim.key_id, attacker.key_id} if key_id
    )
    figures["service_log_bytes"] = len(log.encode())

    helpers = service.descendants()
    os.kill(service.process.pid, signal.SIGKILL)
    service.process.wait()
    time.sleep(5)
    alive = [pid for pid in helpers if Path(f"/proc/{pid}").exists()]
    figures["helpers_before_kill9"] = len(helpers)
    figures["helpers_alive_after_kill9"] = len(alive)
    figures["files_left_after_kill9"] = sum(1 for _ in service.tmp.rglob("*"))
    return figures


def _timed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def _stat(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after the command name (state, ppid, ..., starttime at 19)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _kill_a_worker(service: Service) -> None:
    """SIGKILL one FHE worker: the youngest grandchild of the service (the forkserver's
    children are the janitor, started first, then the workers)."""
    grandchildren = [
        pid for pid in service.descendants() if int(_stat(pid)[1]) != service.process.pid
    ]
    os.kill(max(grandchildren, key=lambda pid: int(_stat(pid)[19])), signal.SIGKILL)


def _status_when_killing(service: Service, call) -> int:
    result = []
    thread = threading.Thread(target=lambda: result.append(_status(call)))
    thread.start()
    time.sleep(0.5)
    _kill_a_worker(service)
    thread.join()
    return result[0]


def _markdown(report: dict) -> str:
    lines = [
        f"# Service faults ({'smoke' if report['smoke'] else 'full'} run)",
        "",
        f"Command: `{report['command']}`. Model: {report['model']}.",
        f"Machine load (`uptime`): before `{report['uptime_before']}`; "
        f"after `{report['uptime_after']}`.",
        "",
        "| measurement | before (issue 13, previous service) | after (this run) |",
        "|---|---|---|",
    ]
    for name, value in report["after"].items():
        shown = f"{value:.3g}" if isinstance(value, float) else value
        lines.append(f"| {name} | {report['before'].get(name, '')} | {shown} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny model, 3 keys, 40 MB bodies")
    args = parser.parse_args()
    uptime_before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="service-faults-") as directory:
        directory = Path(directory)
        model_dir, other_dir = _models(directory, args.smoke)
        after = measure(model_dir, other_dir, directory, args.smoke)
    report = {
        "command": "python benchmarks/service_faults.py" + (" --smoke" if args.smoke else ""),
        "smoke": args.smoke,
        "model": "tiny 3-6-2 network, 2 bits" if args.smoke else "README iris classifier",
        "uptime_before": uptime_before,
        "uptime_after": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
        "before": BEFORE,
        "after": after,
    }
    name = "service_faults_smoke" if args.smoke else "service_faults"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=1) + "\n")
    (RESULTS / f"{name}.md").write_text(_markdown(report))
    print(_markdown(report))


if __name__ == "__main__":
    main()
