"""Object-store failures: one clear line, exit 2, nothing half-written."""
from __future__ import annotations

import http.client
import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from s3_helpers import endpoint_option, free_port, s3, s3_endpoint  # noqa: F401 (fixtures)

from upgd_migrate.cli import main

ROOT = Path(__file__).resolve().parents[2]
SLOWDOWN = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
            b'<Message>Please reduce your request rate.</Message></Error>')


class _Throttled(http.server.BaseHTTPRequestHandler):
    def _answer(self) -> None:
        self.send_response(503)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(SLOWDOWN)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(SLOWDOWN)

    do_GET = do_HEAD = do_PUT = do_POST = _answer

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def throttled():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _Throttled)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def closing():
    """A port that accepts and closes every connection at once."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    stop = threading.Event()

    def serve() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
                conn.close()
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    stop.set()
    thread.join()
    sock.close()


@pytest.mark.parametrize("endpoint, problem", [
    ("throttled", "SlowDown: Please reduce your request rate: the endpoint is overloaded or "
                  "failing; try again later"),
    # botocore names it by when the connection dropped: either name
    ("closing", "no answer from the endpoint ({error} at {url}/bucket): check endpoint_url and "
                "the network")], ids=["throttled", "closing"])
def test_a_failing_endpoint_is_one_line_in_bounded_time(s3_endpoint, endpoint, problem,
                                                         request, capsys):
    url = request.getfixturevalue(endpoint)
    started = time.monotonic()
    assert main(["verify", "s3://bucket/x.pt", *endpoint_option(url)]) == 2
    assert time.monotonic() - started < 60
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and any(err[0] == f"error: s3://bucket/x.pt: "
                                 f"{problem.format(url=url, error=name)}"
                                 for name in ("ConnectionClosedError", "EndpointConnectionError"))


class _WritesThrottled(http.server.BaseHTTPRequestHandler):
    """Reads pass through to the S3 server behind (``server.behind``); writes get SlowDown."""

    def do_GET(self) -> None:
        conn = http.client.HTTPConnection(*self.server.behind, timeout=30)
        conn.request(self.command, self.path, headers=dict(self.headers))
        answer = conn.getresponse()
        body = answer.read()
        self.send_response(answer.status)
        for key, value in answer.getheaders():
            if key.lower() not in ("connection", "transfer-encoding"):
                self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        conn.close()

    def do_PUT(self) -> None:
        if "100-continue" not in (self.headers.get("Expect") or "").lower():
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
        # else botocore waits for "100 Continue" before the body: the 503 comes first
        _Throttled._answer(self)

    do_HEAD, do_POST, do_DELETE = do_GET, do_PUT, do_PUT
    log_message = _Throttled.log_message


@pytest.fixture
def writes_throttled(s3_endpoint):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _WritesThrottled)
    server.behind = ("127.0.0.1", int(s3_endpoint.rsplit(":", 1)[1]))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_an_endpoint_throttling_writes_leaves_the_bucket_as_it_was(s3, writes_throttled,
                                                                    capsys):
    """Reads succeed, every write is answered 503 SlowDown: in place and to another prefix,
    one line naming the object, exit 2, the old object whole, nothing new."""
    fs, bucket = s3
    key = _pbt(fs, bucket)
    for target, where in ((["--in-place"], "pbt"), (["-o", f"s3://{bucket}/out"], "out")):
        assert main(["checkpoint", f"s3://{bucket}/pbt", *target,
                     *endpoint_option(writes_throttled)]) == 2
        assert capsys.readouterr().err.strip().splitlines()[-1] == (
            f"error: s3://{bucket}/{where}/train_00000/checkpoint.pt: SlowDown: Please reduce "
            "your request rate: the endpoint is overloaded or failing; try again later; 0 of 1 "
            "objects written")
    assert fs.find(bucket) == [key]
    assert fs.cat(key) == (ROOT / "fixtures" / "containers" / "pbt.pt").read_bytes()


def test_a_missing_bucket_to_write_to_is_one_line(s3, s3_endpoint, capsys):
    fs, bucket = s3
    out = f"s3://{bucket}-missing/out.pt"
    assert main(["checkpoint", str(ROOT / "fixtures" / "containers" / "pbt.pt"), "-o", out,
                 *endpoint_option(s3_endpoint)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: {out}: no such bucket; 0 of 1 objects written")
    assert not fs.exists(f"{bucket}-missing")


@pytest.fixture
def iam(s3, s3_endpoint):
    """Moto checks signatures and IAM policies while the context it returns is open (the
    server runs in this process: the setting is moto's own, read per request). Also a user
    allowed to read and list, not to write: its (key, secret)."""
    import json

    import boto3
    from moto.core.authorization import enable_iam_authentication

    client = boto3.client("iam", endpoint_url=s3_endpoint, region_name="us-east-1")
    name = f"reader-{s3[1]}"
    client.create_user(UserName=name)
    client.put_user_policy(UserName=name, PolicyName="read", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [
            # s3:Head*: moto asks for it on HEAD of an object (AWS asks for s3:GetObject)
            {"Effect": "Allow", "Action": ["s3:Get*", "s3:List*", "s3:Head*"], "Resource": "*"}]}))
    key = client.create_access_key(UserName=name)["AccessKey"]
    return enable_iam_authentication, (key["AccessKeyId"], key["SecretAccessKey"])


def _pbt(fs, bucket: str) -> str:
    key = f"{bucket}/pbt/train_00000/checkpoint.pt"
    fs.put_file(str(ROOT / "fixtures" / "containers" / "pbt.pt"), key)
    return key


def test_an_unknown_access_key_is_one_line_naming_the_credentials(s3, s3_endpoint, iam,
                                                                   monkeypatch, capsys):
    fs, bucket = s3
    key = _pbt(fs, bucket)
    enforced, _ = iam
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNKNOWN0000000000")
    with enforced():
        code = main(["checkpoint", f"s3://{key}", "--in-place", *endpoint_option(s3_endpoint)])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: s3://{key}: credentials refused (InvalidAccessKeyId: The AWS Access Key Id you "
        "provided does not exist in our records): check the credentials (AWS_ACCESS_KEY_ID and "
        "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or --storage-option key=... --storage-option "
        "secret=...)"]
    assert fs.cat(key) == (ROOT / "fixtures" / "containers" / "pbt.pt").read_bytes()


def test_a_key_that_may_not_write_leaves_the_bucket_as_it_was(s3, s3_endpoint, iam, capsys):
    """The same server accepts the reader's key (inspect works) and refuses its writes: in
    place and to another prefix, one line each, exit 2, nothing written."""
    fs, bucket = s3
    key = _pbt(fs, bucket)
    enforced, (access, secret) = iam
    opt = [*endpoint_option(s3_endpoint), "--storage-option", f"key={access}",
           "--storage-option", f"secret={secret}"]
    with enforced():
        assert main(["checkpoint", "inspect", f"s3://{key}", *opt]) == 0
        capsys.readouterr()
        for target in (["--in-place"], ["-o", f"s3://{bucket}/out"]):
            assert main(["checkpoint", f"s3://{bucket}/pbt", *target, *opt]) == 2
            # the run's summary (what it did locally), then why nothing went out
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 2 and err[0] == "1 file: 1 migrated", err
            where = "pbt" if target[0] == "--in-place" else "out"
            assert err[1] == (f"error: s3://{bucket}/{where}/train_00000/checkpoint.pt: access "
                              "denied (AccessDenied: Access Denied): check the credentials and "
                              "the bucket's permissions; 0 of 1 objects written"), err
    assert fs.find(bucket) == [key]
    assert fs.cat(key) == (ROOT / "fixtures" / "containers" / "pbt.pt").read_bytes()
    assert not fs.call_s3("list_multipart_uploads", Bucket=bucket).get("Uploads")


def test_without_the_extra_a_url_names_it(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "s3fs", None)  # import s3fs raises ImportError
    assert main(["checkpoint", "inspect", "s3://bucket/x.pt"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: s3://bucket/x.pt: s3:// needs s3fs: pip install 'upgd-migrate[s3]'")


@pytest.mark.slow
@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_during_a_multipart_upload_leaves_the_old_object(s3, s3_endpoint, tmp_path,
                                                                  signum, code):
    """SIGTERM or SIGINT (Ctrl-C) while the parts go out: the upload is aborted, the old
    object stays whole, no new object and no open upload (no stray parts) remain."""
    fs, bucket = s3
    gen = torch.Generator().manual_seed(5)
    n = 3_000_000  # 3 tensors of 12 MB: several 5 MiB parts
    state = {0: {"step": 10, "avg_utility": torch.randn(n, generator=gen) * 1e-5,
                 "first_moment": torch.randn(n, generator=gen) * 1e-3,
                 "sec_moment": torch.rand(n, generator=gen) * 1e-6 + 1e-7}}
    group = {"lr": 1e-4, "weight_decay": 0.0, "beta_utility": 0.999, "sigma": 0.001,
             "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "params": [0]}
    local = tmp_path / "big.pt"
    torch.save({"state": state, "param_groups": [group]}, local)
    key = f"{bucket}/big.pt"
    fs.put_file(str(local), key)
    etag = fs.info(key)["ETag"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "UPGD_MIGRATE_PART_BYTES": str(5 * 2**20)}
    proc = subprocess.Popen([sys.executable, "-m", "upgd_migrate", "checkpoint", f"s3://{key}",
                             "--in-place", *endpoint_option(s3_endpoint)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if fs.call_s3("list_multipart_uploads", Bucket=bucket).get("Uploads"):
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the upload finished before it could be interrupted"
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("interrupted"), err
    fs.invalidate_cache()
    assert fs.info(key)["ETag"] == etag  # the old object, whole
    assert not fs.call_s3("list_multipart_uploads", Bucket=bucket).get("Uploads")
    assert fs.find(bucket) == [key]
