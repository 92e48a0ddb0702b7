"""A real S3 server on loopback for tests: moto's ThreadedMotoServer on a free port, with the standard
AWS environment pointing at it (endpoint, dummy credentials, no proxy, no EC2 metadata lookups)."""

from __future__ import annotations

import contextlib
import os
import socket

BUCKET = "facecorpus-test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def s3_server(bucket: str = BUCKET):
    """Yield the endpoint URL of a fresh S3 server holding one empty `bucket`; the environment is
    restored and the server stopped afterwards."""
    import boto3
    from moto.server import ThreadedMotoServer

    from facecorpus import storage

    storage.forget()   # filesystems made for an earlier server point at its port
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
           "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        boto3.client("s3").create_bucket(Bucket=bucket)
        yield endpoint
    finally:
        storage.forget()
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def objects(bucket: str = BUCKET, prefix: str = "") -> dict[str, bytes]:
    """Every object under `prefix` -> its bytes (read with boto3, not with the code under test); the empty
    `folder/` markers pyarrow leaves when it deletes a folder's last-listed object are not data."""
    import boto3

    client = boto3.client("s3")
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for o in page.get("Contents", []) if not o["Key"].endswith("/")]
    return {k: client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}
