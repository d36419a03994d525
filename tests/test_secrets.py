"""Credentials never travel: not in a runtime env, not in a task, not in a pickled filesystem;
each process resolves its own, and a real scoring job still reaches S3 with them."""
from __future__ import annotations

import datetime
import io
import ipaddress
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import boto3
import pytest
from PIL import Image
from skimage import data as skdata

from apm.core import storage

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _markers() -> dict[str, str]:
    """A distinct, unguessable value for every credential variable (moto accepts any)."""
    return {name: f"MARK{uuid.uuid4().hex.upper()}" for name in storage.AWS_SECRET_VARS}


def _files_holding(root: Path, markers: dict[str, str]) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            found += [f"{path}: {name}" for name, value in markers.items()
                      if value.encode() in data]
    return found


def test_worker_settings_hold_no_secret(monkeypatch):
    markers = _markers()
    for name, value in markers.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_PROFILE", "photos-readonly")
    monkeypatch.setenv("AWS_CA_BUNDLE", "/etc/ssl/corp-ca.pem")
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", "/var/run/secrets/token")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://minio.local:9000")

    env = storage.ray_env_vars()
    assert not set(env) & set(storage.AWS_SECRET_VARS)
    assert not any(value in str(env) for value in markers.values())
    assert env["AWS_ENDPOINT_URL"] == "http://minio.local:9000"
    assert env["AWS_PROFILE"] == "photos-readonly"
    assert env["AWS_CA_BUNDLE"] == "/etc/ssl/corp-ca.pem"
    assert env["AWS_WEB_IDENTITY_TOKEN_FILE"] == "/var/run/secrets/token"
    with pytest.raises(ValueError, match="AWS_SECRET_ACCESS_KEY"):
        storage.apply_env({**env, "AWS_SECRET_ACCESS_KEY": "x"})


def test_pickled_filesystem_holds_no_secret_and_works_in_a_worker(ray_local, s3_bucket,
                                                                 monkeypatch):
    import pyarrow as pa
    import ray

    uri = storage.join(s3_bucket, "t.parquet")
    storage.write_table(pa.table({"x": [1, 2, 3]}), uri)
    markers = _markers()
    for name, value in markers.items():
        monkeypatch.setenv(name, value)
    fs, path = storage.arrow_filesystem(uri)
    shipped = pickle.dumps(fs) + pickle.dumps(storage.filesystem(uri)[0])
    assert not any(value.encode() in shipped for value in markers.values())
    # What Ray Data ships to its read tasks: the worker resolves its own credentials.
    rows = ray.data.read_parquet(path, filesystem=fs).take_all()
    assert sorted(r["x"] for r in rows) == [1, 2, 3]


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test S3")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "ca.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def _https_moto(cert: Path, key: Path) -> tuple[subprocess.Popen, str]:
    import socket
    import ssl
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port), "-c", str(cert), "-k", str(key)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    context = ssl.create_default_context(cafile=str(cert))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as raw:
                with context.wrap_socket(raw, server_hostname="127.0.0.1"):
                    return proc, f"https://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("moto's HTTPS server did not start within 30 s")


def test_ca_bundle_from_the_environment_is_honoured(tmp_path, monkeypatch):
    cert, key = _self_signed(tmp_path)
    proc, url = _https_moto(cert, key)
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", url)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        boto3.client("s3", endpoint_url=url, verify=str(cert),
                     region_name="us-east-1").create_bucket(Bucket="tls")
        # The bundle is not among the filesystem's arguments: drop instances cached before.
        s3_filesystem = type(storage.filesystem("s3://tls")[0])
        s3_filesystem.clear_instance_cache()
        monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)
        with pytest.raises(storage.StorageError, match="s3://tls/out: "):  # not trusted
            storage.check_output("s3://tls/out")
        s3_filesystem.clear_instance_cache()
        monkeypatch.setenv("AWS_CA_BUNDLE", str(cert))
        storage.check_output("s3://tls/out")
        storage.write_text("s3://tls/out/a.txt", "over TLS")
        assert storage.read_text("s3://tls/out/a.txt") == "over TLS"
    finally:
        type(storage.filesystem("s3://tls")[0]).clear_instance_cache()
        proc.terminate()
        proc.wait(timeout=10)


def _photos() -> dict[str, bytes]:
    images = {"astronaut": skdata.astronaut(), "chelsea": skdata.chelsea(),
              "coffee": skdata.coffee()}
    photos = {}
    for name, pixels in images.items():
        buffer = io.BytesIO()
        Image.fromarray(pixels).resize((64, 48)).save(buffer, format="JPEG")
        photos[f"photos/{name}.jpg"] = buffer.getvalue()
    return photos


@pytest.mark.timeout(300)
def test_scoring_job_leaks_no_secret_to_ray_output_or_logs(s3_endpoint, s3_bucket):
    photos = _photos()
    for key, body in photos.items():
        storage.write_bytes(storage.join(s3_bucket, key), body)

    markers = _markers()
    # A short folder of its own for the job's Ray (socket paths have a 107-byte limit).
    ray_tmp = Path(tempfile.mkdtemp(prefix="rays-", dir="/tmp")).resolve()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "AWS_"))}
    env.update(markers, AWS_ENDPOINT_URL=s3_endpoint, AWS_REGION="us-east-1",
               RAY_TMPDIR=str(ray_tmp), RAY_USAGE_STATS_ENABLED="0")
    try:
        job = subprocess.run(
            [sys.executable, "-m", "jobs.score", "--input", f"{s3_bucket}/photos/",
             "--output", f"{s3_bucket}/out", "--model", "random:resnet18", "--image-size", "32",
             "--batch-size", "4", "--concurrency", "1", "--progress-every", "5"],
            cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=240)
        printed = job.stdout + job.stderr
        assert job.returncode == 0, printed[-4000:]
        sessions = list((ray_tmp / "ray").glob("session_2*"))
        assert sessions, f"the job's Ray kept no session under {ray_tmp}"
        # The runtime env is in the session's records, so a secret in it would be found.
        assert _files_holding(ray_tmp, {"endpoint": s3_endpoint})
        assert _files_holding(ray_tmp, markers) == []
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert not [name for name, value in markers.items() if value in printed]

    for info in storage.list_files(s3_bucket):
        data = storage.read_bytes(info.uri)
        assert not [n for n, v in markers.items() if v.encode() in data], info.uri
    table = storage.read_table(f"{s3_bucket}/out/scores", columns=["uri", "status"])
    assert table.num_rows == len(photos)
    assert set(table.column("status").to_pylist()) == {"ok"}
