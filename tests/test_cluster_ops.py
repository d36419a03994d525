"""Running where users run it: ray_cluster.yaml, the KubeRay manifests and runtime env in
cluster/, every job's --help, and `ray job submit` of the scoring job to a real local cluster
with token authentication, against the suite's S3 endpoint."""
from __future__ import annotations

import argparse
import copy
import importlib
import io
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from apm.core import storage

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CLUSTER_DIR = PROJECT_ROOT / "cluster"
RAY_VERSION = "2.60.0"
KUBERAY_MANIFESTS = ["raycluster.yaml", "rayjob-score.yaml", "rayjob-finetune.yaml"]
# The local cluster's own S3 credentials, exported before `ray start` as a user would (moto
# takes any); the secret is a marker that must show up nowhere in the cluster's files.
NODE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing",
                    "AWS_SECRET_ACCESS_KEY": f"node-secret-{uuid.uuid4().hex}"}


def _job_modules() -> list[str]:
    return sorted(f"jobs.{p.stem}" for p in (PROJECT_ROOT / "jobs").glob("*.py")
                  if not p.stem.startswith("_"))


# --------------------------------------------------------------------------------------------
# ray_cluster.yaml: Ray's own launcher validation, offline


def _launcher_config() -> dict:
    return yaml.safe_load((PROJECT_ROOT / "ray_cluster.yaml").read_text())


def _validated(raw: dict) -> dict:
    """What `ray up` does before it talks to AWS: the schema that ships with Ray, then the
    provider defaults merged in (prepare_config) and the launcher's validate_config."""
    import jsonschema
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(raw, schema)
    config = prepare_config(copy.deepcopy(raw))
    validate_config(config)
    return config


def test_ray_cluster_yaml_passes_ray_launcher_validation():
    raw = _launcher_config()
    config = _validated(raw)
    assert config["provider"]["type"] == "aws"
    assert 1 <= raw["idle_timeout_minutes"] <= 30

    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert not head["resources"].get("GPU")
    assert not re.match(r"(g|p)\d", head["node_config"]["InstanceType"]), "the head is a CPU node"

    workers = {name: t for name, t in types.items() if name != config["head_node_type"]}
    gpu = {name: t for name, t in workers.items() if t["resources"].get("GPU", 0) >= 1}
    cpu = {name: t for name, t in workers.items() if not t["resources"].get("GPU")}
    assert len(gpu) == 1 and len(cpu) == 1, workers
    (gpu_type,) = gpu.values()
    assert gpu_type["min_workers"] == 0 and gpu_type["max_workers"] >= 1
    assert re.match(r"g[56]\.", gpu_type["node_config"]["InstanceType"])
    assert gpu_type["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
    (cpu_type,) = cpu.values()
    assert cpu_type["resources"]["CPU"] >= 4 and cpu_type["min_workers"] == 0
    assert sum(t["max_workers"] for t in workers.values()) <= config["max_workers"]

    # Every node gets the token; Ray starts with token authentication.
    assert "~/.ray/auth_token" in raw["file_mounts"]
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert any("RAY_AUTH_MODE=token ray start" in cmd for cmd in config[key]), key


def test_launcher_validation_catches_mistakes():
    import jsonschema

    raw = _launcher_config()
    gpu_name = next(n for n, t in raw["available_node_types"].items() if t["resources"].get("GPU"))
    typo = copy.deepcopy(raw)
    typo["available_node_types"][gpu_name]["min_worker"] = 0  # not a field
    with pytest.raises(jsonschema.ValidationError):
        _validated(typo)
    too_many = copy.deepcopy(raw)
    too_many["available_node_types"][gpu_name]["min_workers"] = too_many["max_workers"] + 1
    with pytest.raises(ValueError, match="max_workers"):
        _validated(too_many)


# --------------------------------------------------------------------------------------------
# KubeRay manifests and the runtime env


def _manifest(name: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all((CLUSTER_DIR / name).read_text()) if doc]


def _containers(group: dict) -> list[dict]:
    return group["template"]["spec"]["containers"]


def _check_cluster_spec(spec: dict, where: str) -> dict:
    """Common to the RayCluster and every RayJob's cluster; returns the worker groups by name."""
    assert spec["rayVersion"] == RAY_VERSION, where
    assert spec["enableInTreeAutoscaling"] is True, where
    assert spec["authOptions"]["mode"] == "token", where
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0", where
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    for group in [head, *groups.values()]:
        for container in _containers(group):
            limits = container["resources"]["limits"]
            assert {"cpu", "memory"} <= set(limits), where
            assert container["resources"]["requests"] == limits, f"{where}: requests = limits"
            # S3 credentials reach Ray as the pods' environment, never through a runtime env.
            secrets = [e["secretRef"]["name"] for e in container.get("envFrom", [])]
            assert secrets == ["s3-credentials"], f"{where}: {container['name']} envFrom"
    gpu = [g for g in groups.values()
           if any("nvidia.com/gpu" in c["resources"]["limits"] for c in _containers(g))]
    assert len(gpu) == 1, f"{where}: one GPU worker group"
    assert gpu[0]["minReplicas"] == 0 and gpu[0]["replicas"] == 0 and gpu[0]["maxReplicas"] >= 1
    return groups


def test_kuberay_raycluster():
    (doc,) = _manifest("raycluster.yaml")
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayCluster"
    groups = _check_cluster_spec(doc["spec"], "raycluster.yaml")
    assert set(groups) == {"gpu", "cpu"}
    gpu_limits = _containers(groups["gpu"])[0]["resources"]["limits"]
    assert int(gpu_limits["nvidia.com/gpu"]) == 1
    cpu_limits = _containers(groups["cpu"])[0]["resources"]["limits"]
    assert "nvidia.com/gpu" not in cpu_limits and int(cpu_limits["cpu"]) >= 4
    assert groups["cpu"]["minReplicas"] == 0
    autoscaler = doc["spec"]["autoscalerOptions"]
    assert autoscaler["version"] == "v2" and autoscaler["idleTimeoutSeconds"] > 0


class _Parsed(Exception):
    def __init__(self, namespace: argparse.Namespace):
        super().__init__("parsed")
        self.namespace = namespace


def _parse_job_args(module_name: str, argv: list[str], monkeypatch) -> argparse.Namespace:
    """The job's own argparse parser on ``argv``, stopped right after parsing."""
    module = importlib.import_module(module_name)
    parse_args = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        raise _Parsed(parse_args(self, args, namespace))

    stderr = io.StringIO()
    with monkeypatch.context() as m:
        m.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
        m.setattr(sys, "stderr", stderr)
        try:
            module.main(argv)
        except _Parsed as parsed:
            return parsed.namespace
        except SystemExit as err:
            pytest.fail(f"{module_name} rejects {argv}: {stderr.getvalue()} (exit {err.code})")
    pytest.fail(f"{module_name}.main never parsed its arguments")


def test_kuberay_rayjobs_run_real_jobs_with_valid_arguments(monkeypatch):
    from ray.runtime_env import RuntimeEnv

    modules = {}
    for name in KUBERAY_MANIFESTS[1:]:
        (doc,) = _manifest(name)
        assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayJob", name
        spec = doc["spec"]
        assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] >= 0
        argv = shlex.split(spec["entrypoint"])
        assert argv[:2] == ["python", "-m"] and argv[2].startswith("jobs."), argv
        module = argv[2]
        assert (PROJECT_ROOT / "jobs" / f"{module.split('.')[1]}.py").is_file(), module
        args = _parse_job_args(module, argv[3:], monkeypatch)
        modules[module] = name

        groups = _check_cluster_spec(spec["rayClusterSpec"], name)
        gpu_group = next(g for g in groups.values()
                         if "nvidia.com/gpu" in _containers(g)[0]["resources"]["limits"])
        assert args.device == "cuda", name
        if module == "jobs.finetune":  # one GPU per Ray Train worker
            assert args.num_workers <= gpu_group["maxReplicas"]

        runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
        assert runtime_env["working_dir"], name
        RuntimeEnv(**runtime_env)  # Ray's own validation of the fields
        assert not set(runtime_env.get("env_vars", {})) & set(storage.AWS_SECRET_VARS), name
        # The image has the dependencies: no node installs torch when the job arrives.
        assert not {"pip", "uv", "conda"} & set(runtime_env), name
    assert set(modules) == {"jobs.score", "jobs.finetune"}, modules


def test_runtime_env_file_for_ray_job_submit():
    from ray.runtime_env import RuntimeEnv

    env = yaml.safe_load((CLUSTER_DIR / "runtime_env.yaml").read_text())
    assert env["working_dir"] == "."
    assert "/work" in env["excludes"] and "/.git" in env["excludes"]
    assert "AWS_ENDPOINT_URL" in env["env_vars"]
    assert not set(env["env_vars"]) & set(storage.AWS_SECRET_VARS), "credentials in a runtime env"
    assert all(isinstance(v, str) for v in env["env_vars"].values())
    RuntimeEnv(**env)


def _requirement_name(line: str) -> str:
    return re.split(r"[\s\[<>=!~;]", line.strip(), maxsplit=1)[0].lower()


def _project_pins() -> dict[str, str]:
    """pyproject.toml's runtime dependencies by name, e.g. ``{"torch": "torch==2.14.1"}``."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    return {_requirement_name(r): r.replace(" ", "") for r in project["dependencies"]}


def _requirements_file(path: Path) -> dict[str, str]:
    lines = [line.strip() for line in path.read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    return {_requirement_name(r): r.replace(" ", "") for r in lines}


def test_cluster_requirements_follow_pyproject():
    expected = {name: pin for name, pin in _project_pins().items() if name != "ray"}
    assert _requirements_file(CLUSTER_DIR / "requirements.txt") == expected


# --------------------------------------------------------------------------------------------
# The cluster image: cluster/Dockerfile, named by every config, with exactly the project's pins


def _dockerfile() -> str:
    return (CLUSTER_DIR / "Dockerfile").read_text()


def _pip_installs() -> list[list[str]]:
    """The arguments of every `pip install` in the Dockerfile's RUN instructions."""
    runs = [line[4:] for line in _dockerfile().replace("\\\n", " ").splitlines()
            if line.startswith("RUN ")]
    commands = [shlex.split(command) for run in runs for command in run.split("&&")]
    return [[w for w in words[2:] if w != "--no-cache-dir"] for words in commands
            if words[:2] == ["pip", "install"]]


def test_cluster_image_installs_exactly_the_project_pins():
    installed, project = {}, []
    for args in _pip_installs():
        if "-e" in args:  # the project itself, nothing more
            project.append(args)
            continue
        words = iter(args)
        for word in words:
            if word == "-r":
                installed.update(_requirements_file(PROJECT_ROOT / next(words)))
            else:
                assert not word.startswith("-"), f"unexpected pip option {word}"
                installed[_requirement_name(word)] = word
    assert installed == _project_pins()
    assert project == [["--no-deps", "-e", "."]]
    # The base image's Ray is the pinned one.
    base = re.search(r"^FROM rayproject/ray:(\S+?)-", _dockerfile(), re.MULTILINE).group(1)
    assert _project_pins()["ray"].endswith(f"=={base}")


def _configured_images() -> dict[str, str]:
    """Every container image a cluster config names, by where it is named."""
    raw = _launcher_config()
    images = {f"ray_cluster.yaml docker.{key}": raw["docker"][key]
              for key in ("image", "head_image", "worker_image") if key in raw["docker"]}
    images.update({f"ray_cluster.yaml {name}": t["docker"]["worker_image"]
                   for name, t in raw["available_node_types"].items()
                   if "worker_image" in t.get("docker", {})})
    for name in KUBERAY_MANIFESTS:
        (doc,) = _manifest(name)
        spec = doc["spec"].get("rayClusterSpec", doc["spec"])
        for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
            for container in _containers(group):
                images[f"{name} {group.get('groupName', 'head')}"] = container["image"]
    return images


def test_every_cluster_config_runs_the_image_built_from_the_dockerfile():
    built = re.search(r"docker build -f cluster/Dockerfile -t (\S+) \.", _dockerfile()).group(1)
    images = _configured_images()
    assert len(images) == 1 + 3 + 3 + 2, images  # every head and worker group of every file
    assert set(images.values()) == {built}, images
    assert "rayproject/ray" not in built
    assert built in (CLUSTER_DIR / "README.md").read_text()


def test_no_node_installs_packages_when_it_starts():
    raw = _launcher_config()
    commands = [cmd for key in ("initialization_commands", "setup_commands",
                                "head_setup_commands", "worker_setup_commands")
                for cmd in raw.get(key, [])]
    commands += [cmd for t in raw["available_node_types"].values()
                 for key in ("initialization_commands", "worker_setup_commands")
                 for cmd in t.get(key, [])]
    installs = [shlex.split(cmd) for cmd in commands if "pip" in cmd or "uv " in cmd]
    # Only the autoscaler's AWS client, on the head.
    assert installs == [["pip", "install", "boto3>=1.4.8"]], installs
    assert not any(local == "." for local in raw["file_mounts"].values()), "code mounted to install"
    # The GPU workers check that the image's torch sees their GPU (the driver is new enough).
    (gpu_type,) = [t for t in raw["available_node_types"].values() if t["resources"].get("GPU")]
    assert any("torch.cuda.is_available()" in cmd for cmd in gpu_type["worker_setup_commands"])
    assert raw["docker"]["pull_before_run"] is True


def test_local_cluster_scripts_are_valid_bash():
    for script in ("start_local.sh", "stop_local.sh"):
        path = CLUSTER_DIR / script
        assert os.access(path, os.X_OK), f"{script} is not executable"
        subprocess.run(["bash", "-n", str(path)], check=True)


# --------------------------------------------------------------------------------------------
# Every job answers --help

_HELP_SCRIPT = r"""
import contextlib, io, json, runpy, sys
names, results = sys.argv[1:], {}
for name in names:
    out = io.StringIO()
    sys.argv = [name, "--help"]
    code = "returned without exiting"
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            runpy.run_module(name, run_name="__main__", alter_sys=True)
    except SystemExit as exit_:
        code = exit_.code
    except BaseException as err:
        code = f"{type(err).__name__}: {err}"
    results[name] = [code, out.getvalue()]
print(json.dumps(results))
"""


def test_every_job_answers_help():
    """`python -m jobs.NAME --help` for every job, run the way -m runs a module (runpy as
    __main__) in one fresh interpreter, so that torch and Ray are imported once."""
    modules = _job_modules()
    assert "jobs.score" in modules and "jobs.pipeline" in modules
    proc = subprocess.run([sys.executable, "-c", _HELP_SCRIPT, *modules], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    failures = {name: f"exit {code}: {out[-500:]}" for name, (code, out) in results.items()
                if code not in (0, None) or "usage:" not in out}
    assert not failures, failures


# --------------------------------------------------------------------------------------------
# `ray job submit` to a real local cluster (cluster/start_local.sh, token auth, S3 endpoint)


def _free_ports(n: int) -> list[int]:
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any Ray address, token or S3 setting (the cluster and
    the client get only what the test hands them), with this interpreter's `python` and `ray`
    first on PATH."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAY_", "AWS_")) and k != "AESTHETICS_RAY_CLUSTER"}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env.update(extra)
    return env


@dataclass
class LocalCluster:
    temp_dir: Path
    gcs_port: int
    job_address: str
    token: str


def _marked_pids(temp_dir: Path) -> list[int]:
    import ray  # noqa: F401  (puts Ray's own copy of psutil on sys.path)

    psutil = importlib.import_module("psutil")

    pids = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("AESTHETICS_RAY_CLUSTER") == str(temp_dir):
                pids.append(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return pids


@pytest.fixture
def local_cluster():
    # A short temp dir of its own: Ray's socket paths live below it (107-byte limit), and it
    # is what tells this cluster's processes from any other Ray on the machine.
    temp_dir = Path(tempfile.mkdtemp(prefix="rayc-", dir="/tmp")).resolve()
    gcs, dashboard, agent, client = _free_ports(4)
    token_path = temp_dir / "auth_token"  # the cluster's own token, not ~/.ray/auth_token
    cluster_env = _clean_env(RAY_TEMP_DIR=str(temp_dir), RAY_PORT=str(gcs),
                             DASHBOARD_PORT=str(dashboard), NUM_CPUS="2",
                             RAY_AUTH_TOKEN_PATH=str(token_path), **NODE_CREDENTIALS)

    def stop() -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(CLUSTER_DIR / "stop_local.sh")],
                              env=_clean_env(RAY_TEMP_DIR=str(temp_dir), GRACE_SECONDS="3"),
                              capture_output=True, text=True, timeout=60)

    try:
        started = subprocess.run(
            ["bash", str(CLUSTER_DIR / "start_local.sh"), f"--dashboard-agent-listen-port={agent}",
             f"--ray-client-server-port={client}", "--min-worker-port=0", "--max-worker-port=0",
             "--object-store-memory=300000000"],
            cwd=PROJECT_ROOT, env=cluster_env, capture_output=True, text=True, timeout=180)
        assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]
        assert f"http://127.0.0.1:{dashboard}" in started.stdout
        # The token as a user gets it: `ray get-auth-token` where the cluster was started.
        token = subprocess.run(["ray", "get-auth-token"], env=cluster_env, capture_output=True,
                               text=True, timeout=60, check=True).stdout.strip()
        assert token and token == token_path.read_text().strip()
        assert oct(token_path.stat().st_mode & 0o777) == "0o600"
        yield LocalCluster(temp_dir, gcs, f"http://127.0.0.1:{dashboard}", token)
        stopped = stop()
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert not _marked_pids(temp_dir), "cluster processes survived stop_local.sh"
    finally:
        if _marked_pids(temp_dir):  # start or the test failed half-way
            stop()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _photos() -> dict[str, bytes]:
    from PIL import Image
    from sklearn.datasets import load_sample_images

    china, flower = (Image.fromarray(a) for a in load_sample_images().images)

    def encode(image: Image.Image, fmt: str) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, format=fmt)
        return buffer.getvalue()

    return {
        "photos/china.jpg": encode(china.resize((160, 107)), "JPEG"),
        "photos/flower.jpg": encode(flower.resize((160, 107)), "JPEG"),
        "photos/2020/flower.png": encode(flower.resize((96, 64)), "PNG"),
        "photos/2020/broken.jpg": b"these bytes are not a photo\n" * 8,
    }


def _ray_cli(args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(["ray", *args], cwd=PROJECT_ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.timeout(480)
def test_ray_job_submit_scores_s3_photos_on_a_local_cluster(local_cluster, s3_endpoint,
                                                            s3_bucket, tmp_path):
    import boto3
    import pyarrow.dataset as pads
    import pyarrow.fs as pafs

    bucket = s3_bucket.removeprefix("s3://")
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="testing",
                      aws_secret_access_key="testing", region_name="us-east-1")
    photos = _photos()
    for key, body in photos.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)

    # The S3 settings reach the job only through the runtime env's env_vars, the credentials
    # only through the environment the cluster was started in (NODE_CREDENTIALS); the client
    # has neither (see _clean_env).
    runtime_env = yaml.safe_load((CLUSTER_DIR / "runtime_env.yaml").read_text())
    runtime_env["env_vars"].update(AWS_ENDPOINT_URL=s3_endpoint, AWS_REGION="us-east-1")
    runtime_env_file = tmp_path / "runtime_env.yaml"
    runtime_env_file.write_text(yaml.safe_dump(runtime_env))

    address = ["--address", local_cluster.job_address]
    client_env = _clean_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=local_cluster.token)

    # Token authentication is on: a wrong token is refused.
    refused = _ray_cli(["job", "list", *address], _clean_env(
        RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=uuid.uuid4().hex), timeout=60)
    assert refused.returncode != 0
    assert "Authentication" in refused.stdout + refused.stderr

    submission_id = f"score-{uuid.uuid4().hex[:8]}"
    entrypoint = ["python", "-m", "jobs.score", "--input", f"{s3_bucket}/photos/",
                  "--output", f"{s3_bucket}/out", "--model", "random:resnet18",
                  "--image-size", "64", "--batch-size", "4", "--concurrency", "1",
                  "--rows-per-file", "3", "--progress-every", "5"]
    started = time.monotonic()
    try:
        submitted = _ray_cli(["job", "submit", *address, "--submission-id", submission_id,
                              "--runtime-env", str(runtime_env_file), "--working-dir", ".",
                              "--", *entrypoint], client_env, timeout=300)
        output = submitted.stdout + submitted.stderr
    except subprocess.TimeoutExpired as timeout:
        _ray_cli(["job", "stop", *address, submission_id], client_env, timeout=60)
        logs = _ray_cli(["job", "logs", *address, submission_id], client_env, timeout=60)
        pytest.fail(f"the job did not finish within {timeout.timeout} s; logs:\n"
                    f"{logs.stdout[-6000:]}{logs.stderr[-2000:]}")
    status = _ray_cli(["job", "status", *address, submission_id], client_env, timeout=60)
    succeeded = re.search(rf"Job '{submission_id}' succeeded", status.stdout + status.stderr)
    assert submitted.returncode == 0 and succeeded, (
        f"job {submission_id} did not succeed ({time.monotonic() - started:.0f} s):\n"
        f"{status.stdout}{status.stderr}\n--- submit output and job logs ---\n{output[-8000:]}")

    # The Parquet the job wrote, read back through the S3 endpoint.
    fs = pafs.S3FileSystem(endpoint_override=s3_endpoint, scheme="http", access_key="testing",
                           secret_key="testing", region="us-east-1")
    table = pads.dataset(f"{bucket}/out/scores", filesystem=fs, format="parquet").to_table()
    rows = {row["uri"]: row for row in table.select(["uri", "status", "error", "mean"]).to_pylist()}
    assert table.num_rows == len(photos) == len(rows)
    assert set(rows) == {f"{s3_bucket}/{key}" for key in photos}
    for key in photos:
        row = rows[f"{s3_bucket}/{key}"]
        if key.endswith("broken.jpg"):
            assert row["status"] == "error" and row["error"] and row["mean"] is None
        else:
            assert row["status"] == "ok" and 1.0 <= row["mean"] <= 10.0, row

    # The cluster's logs, runtime-env files and job records never saw the secret.
    secret = NODE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"].encode()
    assert secret not in (output + status.stdout + status.stderr).encode()
    leaked = [str(p) for p in local_cluster.temp_dir.rglob("*")
              if p.is_file() and not p.is_symlink() and secret in p.read_bytes()]
    assert not leaked, leaked
