"""Shared fixtures: a real S3 HTTP endpoint (moto's standalone server) and a local Ray."""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from benchmarks._common import start_moto

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_AVA = PROJECT_ROOT.parent / "shared" / "data" / "ava"


@pytest.fixture(scope="session")
def s3_endpoint():
    """A moto S3 server on 127.0.0.1, configured through the standard AWS variables."""
    proc, url = start_moto()
    saved = {k: os.environ.get(k) for k in
             ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_ENDPOINT_URL")}
    os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": url})
    yield url
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture()
def s3_bucket(s3_endpoint):
    """A fresh, empty bucket on the test endpoint; yields its ``s3://`` URI."""
    import boto3

    name = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    yield f"s3://{name}"


@pytest.fixture(scope="session")
def s3_endpoint_with_auth():
    """A second moto server that checks credentials (none are valid on it)."""
    proc, url = start_moto(extra_env={"INITIAL_NO_AUTH_ACTION_COUNT": "0"})
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="session")
def ray_local():
    """One small local Ray for the session (2 CPUs, like the CI machine)."""
    import ray

    # Workers take S3 credentials from the environment Ray starts in, as on a real node (they
    # never travel in a runtime env), so the suite's moto credentials are set before it starts.
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False, ignore_reinit_error=True)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def real_ava_dir() -> Path:
    path = SHARED_AVA / "AVA_dataset"
    if not (path / "AVA.txt").exists():
        pytest.skip(f"real AVA labels not found at {path} (../shared is absent on this machine)")
    return path


def small_synthetic_ava(root: Path, n: int, seed: int) -> tuple[str, str]:
    """A synthetic AVA of ``n`` 48-px photos under ``root``: its manifest and truth URIs."""
    from apm.data.manifest import build_manifest
    from apm.data.synthetic.dataset import SyntheticConfig, generate

    generate(SyntheticConfig(n=n, size=48, seed=seed, test_fraction=0.25), str(root / "synthetic"))
    summary = build_manifest(str(root / "synthetic"), str(root / "ava"),
                             images=str(root / "synthetic" / "images"))
    return summary.manifest_uri, str(root / "synthetic" / "truth.parquet")
