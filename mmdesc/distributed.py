"""The processes of one training run: who is who, and the few collectives training needs.

``torchrun --nproc_per_node=N -m mmdesc train RECIPE`` (or ``mmdesc train --nproc N``,
which calls torchrun's launcher) starts N processes with RANK, WORLD_SIZE, LOCAL_RANK and
LOCAL_WORLD_SIZE in their environment; ``start`` joins them in one process group (gloo on
CPU, NCCL on CUDA) with a timeout, so a peer that stops answering is an error, not a wait
forever. A run started without torchrun is one process: ``Processes()``, whose collectives
return at once, so the trainer has one code path.

Every collective of a run goes through ``Processes``: a peer that died (connection closed,
timeout) surfaces as ``PeerLost``, one line naming the rank and saying how to resume.
"""
from __future__ import annotations

import functools
import os
from contextlib import contextmanager
from datetime import timedelta
from typing import Callable, Iterator, TypeVar

from mmdesc.errors import MmdescError

T = TypeVar("T")

# for tests only: "RANK:STEP" makes process RANK end at once (os._exit(1), no clean-up, as a
# crash or an OOM kill would) when it is about to train step STEP
DIE_AT_STEP = "MMDESC_DIE_AT_STEP"


class PeerLost(MmdescError):
    """Another process of the run stopped answering (it died, or its machine did)."""

    def __init__(self, rank: int, world: int, reason: str):
        first = (reason.strip().splitlines() or ["no reason given"])[0][:160]
        super().__init__(f"process {rank} of {world}: lost contact with the other processes of the run "
                         f"({first}); the run stopped; run the same command again to resume from its last "
                         f"checkpoint")


class OnEveryRank(MmdescError):
    """The error rank 0 met in a step that rank 0 alone does, raised on the other ranks too so
    that all of them stop together; rank 0 prints the message, the others only exit with its code."""

    def __init__(self, message: str, exit_code: int):
        self.exit_code = exit_code
        super().__init__(message)


def _is_peer_failure(e: BaseException) -> bool:
    import torch.distributed as dist

    text = str(e)
    return isinstance(e, dist.DistError) or any(
        s in text for s in ("gloo", "NCCL", "Connection closed", "Connection reset", "timed out", "Broken pipe"))


class Processes:
    """Rank ``rank`` of ``world`` processes (``local_world`` of them on this machine).

    Built by ``start``; ``Processes()`` is a run of one process."""

    def __init__(self, rank: int = 0, world: int = 1, local_rank: int = 0, local_world: int = 1):
        self.rank, self.world, self.local_rank, self.local_world = rank, world, local_rank, local_world

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes checkpoints, logs and the progress bar."""
        return self.rank == 0

    @property
    def many(self) -> bool:
        return self.world > 1

    @contextmanager
    def talking(self) -> Iterator[None]:
        """Turns a failed collective (inside DDP's backward as well) into ``PeerLost``."""
        try:
            yield
        except RuntimeError as e:
            if self.many and _is_peer_failure(e):
                raise PeerLost(self.rank, self.world, str(e)) from None
            raise

    def barrier(self) -> None:
        if self.many:
            import torch.distributed as dist

            with self.talking():
                dist.barrier()

    def broadcast(self, obj: T) -> T:
        """Rank 0's ``obj`` on every rank (any picklable object)."""
        if not self.many:
            return obj
        import torch.distributed as dist

        box = [obj]
        with self.talking():
            dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: T) -> list[T]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.many:
            return [obj]
        import torch.distributed as dist

        out: list = [None] * self.world
        with self.talking():
            dist.all_gather_object(out, obj)
        return out

    def total(self, values: list[float]) -> list[float]:
        """The sum over ranks of each of ``values`` (one small all-reduce)."""
        if not self.many:
            return list(values)
        import torch
        import torch.distributed as dist

        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
        t = torch.tensor(values, dtype=torch.float64, device=device)
        with self.talking():
            dist.all_reduce(t)
        return t.tolist()

    def main_only(self, work: Callable[[], T]) -> T:
        """``work()`` on rank 0 alone; its result on every rank (the others wait for it). An
        error of rank 0 is raised on every rank, so all of them stop together."""
        if not self.many:
            return work()
        result, failed = None, None
        if self.main:
            try:
                result = work()
            except MmdescError as e:
                failed = (str(e), e.exit_code)
                self.broadcast((None, failed))
                raise
        result, failed = self.broadcast((result, failed))
        if failed is not None:
            raise OnEveryRank(*failed)
        return result

    def die_if_told(self, step: int) -> None:
        """The fault ``DIE_AT_STEP`` injects (tests)."""
        told = os.environ.get(DIE_AT_STEP, "")
        if told and told == f"{self.rank}:{step}":
            os._exit(1)


def from_environment() -> tuple[int, int, int, int]:
    """(rank, world, local rank, local world) as torchrun sets them; (0, 1, 0, 1) without torchrun."""
    env = os.environ
    world = int(env.get("WORLD_SIZE", 1))
    return (int(env.get("RANK", 0)), world, int(env.get("LOCAL_RANK", 0)),
            int(env.get("LOCAL_WORLD_SIZE", world)))


def start(cuda: bool, timeout_minutes: float) -> Processes:
    """Join this process to its run's process group (when torchrun started several): NCCL when
    training on CUDA (this process on GPU LOCAL_RANK), gloo otherwise."""
    rank, world, local_rank, local_world = from_environment()
    if world == 1:
        return Processes()
    import torch
    import torch.distributed as dist

    if cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(minutes=timeout_minutes),
                                **({"device_id": torch.device("cuda", local_rank)} if cuda else {}))
    return Processes(rank, world, local_rank, local_world)


def stop(processes: Processes) -> None:
    if processes.many:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def launch(nproc: int, argv: list[str]) -> int:
    """``torchrun --standalone --nproc_per_node=NPROC`` of ``python -m mmdesc ARGV`` on this
    machine, through torchrun's own launcher (its elastic agent: when a process fails it ends
    the others). Returns the exit code of the first process that failed, 0 when all succeeded."""
    import logging
    import sys
    import uuid

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    for name in list(logging.root.manager.loggerDict):  # the launcher's failures, not its chatter
        if name.startswith("torch.distributed.elastic"):
            logging.getLogger(name).setLevel(logging.ERROR)

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, cores // nproc)))  # torchrun's warning, answered
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.1)
    try:
        elastic_launch(config, sys.executable)("-m", "mmdesc", *argv)
    except ChildFailedError as e:
        _, failure = e.get_first_failure()
        code = failure.exitcode
        return 128 - code if code < 0 else code or 1  # -N: killed by signal N
    except SignalException as e:  # Ctrl-C or SIGTERM: the launcher passed it on, each process checkpointed
        return 128 + int(e.sigval)
    return 0


@functools.lru_cache(maxsize=1)
def _parallel_class():
    from torch.nn.parallel import DistributedDataParallel

    class Parallel(DistributedDataParallel):
        """DistributedDataParallel whose attributes are the model's (``net.decoder``,
        ``net.ctc_head``), so code written for the plain model runs on the wrapped one."""

        def __getattr__(self, name: str):
            try:
                return super().__getattr__(name)
            except AttributeError:
                return getattr(self.module, name)

    return Parallel


def __getattr__(name: str):  # ``Parallel`` built on first use: importing this module does not import torch
    if name == "Parallel":
        return _parallel_class()
    raise AttributeError(name)
