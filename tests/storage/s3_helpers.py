"""The storage tests' local S3 server: moto's ThreadedMotoServer on 127.0.0.1 and a free port,
with dummy credentials, and s3fs pointed at it (as s3fs's own tests do). Test modules import
the fixtures from here (a conftest.py here would shadow the one of tests/ for `import conftest`)."""
from __future__ import annotations

import socket
from pathlib import Path

import pytest

FIX = Path(__file__).resolve().parents[2] / "fixtures"
DUMMY = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
         "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def endpoint_option(endpoint: str) -> list[str]:
    return ["--storage-option", f"endpoint_url={endpoint}"]


@pytest.fixture(scope="session")
def s3_endpoint():
    moto_server = pytest.importorskip("moto.server")
    mp = pytest.MonkeyPatch()  # before the server starts: it must never see real AWS config
    for key, value in DUMMY.items():
        mp.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE",
                "AWS_SHARED_CREDENTIALS_FILE", "AWS_ENDPOINT_URL"):
        mp.delenv(key, raising=False)
    mp.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    mp.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
        mp.undo()


@pytest.fixture
def s3(s3_endpoint, monkeypatch):
    """An s3fs client of the local server, and a fresh bucket per test (its name)."""
    import s3fs

    for key, value in DUMMY.items():
        monkeypatch.setenv(key, value)
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint},
                           skip_instance_cache=True)
    bucket = f"b{free_port()}"
    fs.mkdir(bucket)
    yield fs, bucket
    fs.rm(bucket, recursive=True)


@pytest.fixture
def traffic(monkeypatch):
    """What passes through s3fs's doors to S3 (the coroutine and its sync wrapper, which holds
    the original): bytes read from GET bodies, as they arrive; bytes sent in PUTs and parts;
    every call as (method, Key)."""
    import s3fs.core

    seen = {"get": 0, "put": 0, "calls": []}
    cls = s3fs.core.S3FileSystem
    call, sync_call = cls._call_s3, cls.call_s3

    def tally(method: str, kwargs: dict, out: dict) -> dict:
        seen["calls"].append((method, kwargs.get("Key")))
        if method in ("put_object", "upload_part"):
            seen["put"] += len(kwargs.get("Body") or b"")
        elif method == "get_object":
            read = out["Body"].read

            async def body_read(*a, **k):
                data = await read(*a, **k)
                seen["get"] += len(data)
                return data

            out["Body"].read = body_read
        return out

    async def counted(self, method, *args, **kwargs):
        return tally(method, kwargs, await call(self, method, *args, **kwargs))

    monkeypatch.setattr(cls, "_call_s3", counted)
    monkeypatch.setattr(cls, "call_s3", lambda self, method, *a, **k: tally(
        method, k, sync_call(self, method, *a, **k)))
    return seen
