"""
Many fits at once through Ray: each job (a sequence and configuration of an evaluation, or a run
of consecutive windows of a long recording) is a Ray task that reserves one GPU where the
cluster has GPUs (a share of one with --gpus_per_fit below 1, for small fits), or one CPU.

Without an address Ray starts on this machine; with "auto", "ray://HOST:PORT" or RAY_ADDRESS the
same jobs run on a cluster, whose nodes need this project installed (pip install .[ray]) or this
checkout at the same path, and the recordings at the same paths. A task whose worker dies (a
killed process, a lost node) is run again by Ray; a task that fails for a reason in its data is
reported for its job, and the others go on. Ray is optional: only --ray imports it.
"""

import os
import sys

from config import UsageError

RAY_INSTALL = "pip install 'ray>=2.9' (or pip install .[ray])"
RETRIES = 3  # runs of a task whose worker died, before its job is reported failed
HERE = os.path.dirname(os.path.abspath(__file__))


class JobFailed:
    """The result of a job whose task raised: the exception, for its caller to report."""

    def __init__(self, error):
        self.error = error


def require_ray():
    """The ray module; a run asking for it without it installed is refused before any work."""
    try:
        import ray
    except ImportError:
        raise UsageError(f"--ray needs the ray package: {RAY_INSTALL}") from None
    return ray


def connect(address):
    """The ray module, connected: to `address` ("auto", "ray://HOST:PORT"), or to RAY_ADDRESS,
    or to a Ray started here for this process ("local" or None without RAY_ADDRESS)."""
    ray = require_ray()
    if ray.is_initialized():
        return ray
    address = None if address in (None, "local") else address
    # the workers import this project's modules as the driver does: the checkout's folders (or
    # nothing to add, where the package is installed); their OpenMP threads sleep when idle
    # instead of spinning, since tasks that share a node's cores each keep the caller's thread
    # count (with_threads), and spinning threads would take the cores from each other
    paths = [HERE, os.path.join(HERE, "scripts")] if not __package__ else []
    python_path = os.pathsep.join(paths + [os.environ.get("PYTHONPATH", "")]).strip(os.pathsep)
    try:
        ray.init(address=address or os.environ.get("RAY_ADDRESS"), include_dashboard=False,
                 logging_level="ERROR", log_to_driver=False,
                 runtime_env={"env_vars": {**({"PYTHONPATH": python_path} if python_path else {}),
                                           "OMP_WAIT_POLICY": "PASSIVE"}})
    except ConnectionError as error:
        raise UsageError(f"--ray {address}: no Ray cluster answers there ({error})") from None
    return ray


def task_resources(ray, gpus_per_fit):
    """What one job reserves: a GPU (or `gpus_per_fit` of one) where the cluster has GPUs, else
    a CPU."""
    if ray.cluster_resources().get("GPU", 0) > 0:
        return {"num_gpus": gpus_per_fit, "num_cpus": 1}
    return {"num_cpus": 1}


def with_threads(threads, function, *job):
    """function(*job) computed with `threads` CPU threads: torch's sums over many threads are
    rounded otherwise than over few, so a task computes with the caller's count (however many
    CPUs it reserved), and gives the frames that the caller would have computed itself."""
    import torch
    torch.set_num_threads(threads)
    return function(*job)


def run_jobs(function, jobs, address=None, gpus_per_fit=1.0, describe=str):
    """[function(*job) for job in jobs], each job a Ray task, in the order of `jobs`. A job whose
    function raises gives JobFailed(error) in its place (not retried: its data will fail again);
    a job whose worker dies is retried up to RETRIES times."""
    import torch
    from tqdm import tqdm
    ray = connect(address)
    remote = ray.remote(max_retries=RETRIES, retry_exceptions=False,
                        **task_resources(ray, gpus_per_fit))(with_threads)
    threads = torch.get_num_threads()
    pending = {remote.remote(threads, function, *job): k for k, job in enumerate(jobs)}
    results = [None] * len(jobs)
    with tqdm(total=len(jobs), desc="jobs", unit="job", disable=None, leave=False) as bar:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            k = pending.pop(done[0])
            try:
                results[k] = ray.get(done[0])
            except ray.exceptions.RayTaskError as error:
                results[k] = JobFailed(error.cause if error.cause is not None else error)
            except ray.exceptions.WorkerCrashedError as error:  # died on every retry
                results[k] = JobFailed(OSError(f"its worker died {RETRIES + 1} times ({error})"))
            except ray.exceptions.RayError as error:  # an error that could not be sent back, a lost node
                results[k] = JobFailed(error)
            if isinstance(results[k], JobFailed):
                print(f"note: {describe(jobs[k])}: failed: {results[k].error}", file=sys.stderr)
            bar.update(1)
    return results
