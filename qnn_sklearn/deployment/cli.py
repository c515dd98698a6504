"""``qnn-sklearn`` command line: ``serve`` a saved model over HTTP, ``bench`` its FHE runs."""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

_MIB = 1 << 20


def _serve(args) -> None:
    from .http_server import read_api_token, serve

    api_token = None if args.api_token_file is None else read_api_token(args.api_token_file)
    serve(
        args.model_dir,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        n_workers=args.workers,
        max_key_bytes=int(args.max_key_mb * _MIB),
        max_input_bytes=int(args.max_input_mb * _MIB),
        max_keys=args.max_keys,
        max_keys_per_client=args.max_keys_per_client,
        key_idle_s=args.key_idle_s,
        key_check_s=args.key_check_s,
        max_uploads=args.max_uploads,
        max_rows=args.max_rows,
        api_token=api_token,
    )


def _bench(args) -> None:
    from . import framing
    from .bench import measure_throughput
    from .fhe_model import FHEModelClient, FHEModelServer

    client = FHEModelClient(args.model_dir)
    rng = np.random.default_rng(args.seed)
    X = rng.normal(size=(args.rows, *client.module.input_shape))
    keygen_s = _seconds(client.generate_private_and_evaluation_keys)
    keys = client.get_serialized_evaluation_keys()
    one = client.quantize_encrypt_serialize(X[:1])
    result = FHEModelServer(args.model_dir).run(one, keys)
    report = {
        "keygen_s": keygen_s,
        "evaluation_keys_bytes": len(keys),
        "one_input_ciphertext_bytes": len(framing.unpack(one)[0]),
        "one_result_ciphertext_bytes": len(framing.unpack(result)[0]),
        "compression": client.compression(),
        **measure_throughput(args.model_dir, client, X, args.workers),
    }
    if args.url is not None:
        report["http"] = _http_latency(args.url, client, X[:1])
    json.dump(report, sys.stdout, indent=1)
    print()


def _seconds(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def _http_latency(url: str, client, row) -> dict:
    """Seconds of the key upload, then of one encrypted prediction through the service (encrypt,
    POST, run, decrypt): cold (its workers load the new keys), then warm."""
    from .http_client import FHEHTTPClient

    http = FHEHTTPClient(url, client)
    timings = {
        "upload_keys_s": _seconds(http.upload_evaluation_keys),
        "first_row_s": _seconds(lambda: http.predict(row)),
        "one_row_s": _seconds(lambda: http.predict(row)),
    }
    http.delete_evaluation_keys()
    return timings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qnn-sklearn", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve MODEL_DIR (saved by FHEModelDev) over HTTP")
    serve.add_argument("model_dir")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=None, help="FHE worker processes")
    serve.add_argument("--max-key-mb", type=float, default=1024, help="largest key upload")
    serve.add_argument("--max-input-mb", type=float, default=64, help="largest ciphertext body")
    serve.add_argument("--max-keys", type=int, default=16, help="key sets kept at once")
    serve.add_argument(
        "--max-keys-per-client", type=int, default=2, help="key sets kept per client token"
    )
    serve.add_argument(
        "--key-idle-s",
        type=float,
        default=3600,
        help="when full, key sets unused for this long may make room for new ones",
    )
    serve.add_argument(
        "--key-check-s", type=float, default=300, help="time limit of an uploaded key check"
    )
    serve.add_argument("--max-uploads", type=int, default=2, help="key uploads at once")
    serve.add_argument("--max-rows", type=int, default=1024, help="rows per prediction request")
    serve.add_argument(
        "--api-token-file",
        default=None,
        help="file (mode 600) holding a token that every request but /health must send as "
        "Authorization: Bearer <token>",
    )
    serve.add_argument("--log-level", default="info")
    serve.set_defaults(run=_serve)

    bench = commands.add_parser(
        "bench", help="sizes and encrypted rows/s of MODEL_DIR, one row at a time vs in parallel"
    )
    bench.add_argument("model_dir")
    bench.add_argument("--rows", type=int, default=32)
    bench.add_argument("--workers", type=int, default=None)
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument(
        "--url", default=None, help="also time one prediction through `serve` of MODEL_DIR here"
    )
    bench.set_defaults(run=_bench)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()
