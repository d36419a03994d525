"""Starting or joining Ray so that every worker sees the same storage configuration."""
from __future__ import annotations

import logging
import os

import ray

from apm import storage

log = logging.getLogger(__name__)


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join the cluster at ``address`` (or ``RAY_ADDRESS``), else start a local Ray.

    The S3 settings of this process (endpoint, region, profile name, ...) travel to the workers
    as ``env_vars`` of the job's runtime environment, so a ``--s3-endpoint`` given to the driver
    reaches them too. Credentials do not (Ray logs runtime envs): a local Ray started here
    inherits them from this process, a cluster's workers from their nodes (see cluster/README.md).
    """
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ:
        # Under `ray job submit` Ray merges the job's runtime env with the one below and refuses
        # a variable set in both (the S3 settings) unless the driver's value may win.
        os.environ.setdefault("RAY_OVERRIDE_JOB_RUNTIME_ENV", "1")
    ray.init(
        address=address,
        num_cpus=None if address else num_cpus,
        runtime_env={"env_vars": storage.ray_env_vars()},
        include_dashboard=False if not address else None,
        log_to_driver=True,
        configure_logging=False,
    )
    log.info("Ray resources: %s", ray.cluster_resources())
