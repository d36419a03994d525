"""Starting or joining Ray so that every worker sees the same storage configuration."""
from __future__ import annotations

import logging
import os

import ray

from apm.core import progress, storage

log = logging.getLogger(__name__)


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join the cluster at ``address`` (or ``RAY_ADDRESS``), else start a local Ray.

    The S3 settings of this process (endpoint, region, profile name, ...) travel to the workers
    as ``env_vars`` of the job's runtime environment, so a ``--s3-endpoint`` given to the driver
    reaches them too. Credentials do not (Ray logs runtime envs): a local Ray started here
    inherits them from this process, a cluster's workers from their nodes (see cluster/README.md).

    So does the output chosen by the job's command line (:mod:`apm.core.progress`: ``--verbose``,
    ``--log-level``), through a ``worker_process_setup_hook``; Ray Data's progress bars are
    set up here, before any dataset is created (datasets keep the DataContext of their birth).
    """
    output = progress.configured()
    progress.configure_data_context(output)
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ:
        # Under `ray job submit` Ray merges the job's runtime env with the one below and refuses
        # a variable set in both (the S3 settings) unless the driver's value may win.
        os.environ.setdefault("RAY_OVERRIDE_JOB_RUNTIME_ENV", "1")
    # A local Ray runs without the dashboard, hence without Ray's state API.
    additions = progress.runtime_env_additions(output, local=not address)
    runtime_env = {**additions, "env_vars": {**storage.ray_env_vars(), **additions["env_vars"]}}
    ray.init(
        address=address,
        num_cpus=None if address else num_cpus,
        runtime_env=runtime_env,
        include_dashboard=False if not address else None,
        log_to_driver=True,
        configure_logging=False,
    )
    log.info("Ray resources: %s", ray.cluster_resources())
