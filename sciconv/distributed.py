"""Data-parallel training: `gpus: N` in a dataset config trains on N GPUs, one process each.

`sciconv train` with gpus > 1 starts itself again under torchrun (`torch.distributed.run
--standalone`), N processes on this machine. Each process trains on its rows of every global batch
(sciconv.batches), DistributedDataParallel averages the gradients, and process 0 alone validates,
writes checkpoints and logs to the one MLflow run. Without GPUs the same code runs N CPU processes
over gloo: that is how it is tested, and how a run can be checked on a laptop.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

from sciconv.runtime import log

_LAUNCHED = "SCICONV_DISTRIBUTED"  # set by relaunch, so a process started by torchrun does not relaunch again


@dataclass(frozen=True)
class World:
    rank: int = 0
    local_rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def current() -> World:
    """This process's place, from the environment torchrun sets; one process otherwise."""
    if os.environ.get(_LAUNCHED) != "1" or "WORLD_SIZE" not in os.environ:
        return World()
    return World(int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"]))


def should_launch(processes: int) -> bool:
    return processes > 1 and os.environ.get(_LAUNCHED) != "1"


def launch(processes: int, argv: list[str]) -> int:
    """Run `sciconv <argv>` as `processes` processes under torchrun; their exit status."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
               "-m", "sciconv.cli", *argv]
    log.info("data-parallel training over %d processes: %s", processes, " ".join(command))
    return subprocess.call(command, env=os.environ | {_LAUNCHED: "1"})


def start(world: World, device: torch.device) -> None:
    """Join the process group: NCCL between GPUs (each process on the GPU it claimed), gloo between CPU processes."""
    if world.size == 1:
        return
    import datetime

    import torch
    import torch.distributed as dist

    # process 0 validates between epochs while the others wait in the next epoch's first all-reduce
    timeout = datetime.timedelta(hours=2)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device, timeout=timeout)
    else:
        dist.init_process_group("gloo", timeout=timeout)


def wrap(net: torch.nn.Module, world: World, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel around the network (batch norm synchronised on GPUs), or the network itself."""
    if world.size == 1:
        return net
    import torch
    from torch.nn.parallel import DistributedDataParallel

    if device.type == "cuda":
        # per-process batch statistics would differ from one process's on the global batch
        net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
        return DistributedDataParallel(net, device_ids=[device.index])
    return DistributedDataParallel(net)


def barrier(world: World) -> None:
    if world.size > 1:
        import torch.distributed as dist

        dist.barrier()


def mean_across(value: torch.Tensor, world: World) -> torch.Tensor:
    """The mean of a scalar over all processes (every process gets it)."""
    if world.size == 1:
        return value
    import torch.distributed as dist

    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / world.size


def stop(world: World) -> None:
    if world.size > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
