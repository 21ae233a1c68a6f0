"""Where a run executes: device, processes, threads, deterministic kernels, autocast.

Training and evaluation both start here: :func:`resolve_device` turns ``train.device`` into
a torch device, :func:`distributed_runtime` joins the process group under ``torchrun``
(``WORLD_SIZE > 1``; gloo on CPU, NCCL on CUDA) and yields the :class:`Runtime` the loop
talks to, and :func:`torch_settings` sets threads, deterministic kernels and cuDNN attention
for a run.
"""

from __future__ import annotations

import logging
import os
import sys
import uuid
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch import Tensor

from m3sa.config import Config
from m3sa.errors import ModelError

log = logging.getLogger(__name__)


def resolve_device(choice: str, local_rank: int = 0) -> torch.device:
    """``train.device``: ``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ModelError("train.device is 'cuda' but no CUDA device is available; set train.device to auto or cpu")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def autocast_for(device: torch.device) -> Any:
    """bf16 autocast on CUDA, nothing elsewhere."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return nullcontext()


@dataclass(frozen=True)
class Runtime:
    """Where this process runs: device, number of processes and its rank."""

    device: torch.device
    world: int = 1
    rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def gather(self, obj: Any) -> list[Any]:
        """All ranks' ``obj`` (a picklable Python object), in rank order."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def sum_(self, t: Tensor) -> Tensor:
        """In-place sum of ``t`` over ranks."""
        if self.distributed:
            dist.all_reduce(t)
        return t

    def threads(self, num_threads: int) -> int:
        """``train.num_threads`` for this process: 0 keeps torch's default, except that CPU
        processes of a distributed run share the cores evenly."""
        if num_threads == 0 and self.distributed and self.device.type == "cpu":
            return max(1, (os.cpu_count() or 1) // self.world)
        return num_threads


@contextmanager
def distributed_runtime(cfg: Config) -> Iterator[Runtime]:
    """The runtime of this process; joins (and later leaves) the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(cfg.train.device, local_rank)
    if world <= 1:
        yield Runtime(device)
        return
    own = not dist.is_initialized()
    if own:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    try:
        yield Runtime(device, dist.get_world_size(), dist.get_rank())
    finally:
        if own:
            dist.destroy_process_group()


@contextmanager
def torch_settings(num_threads: int, deterministic: bool, cudnn_attention: bool = True) -> Iterator[None]:
    """Thread count, deterministic kernels and cuDNN's attention kernels for the duration of a
    run, restored afterwards."""
    threads = torch.get_num_threads()
    det = torch.are_deterministic_algorithms_enabled()
    det_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn_sdp = torch.backends.cuda.cudnn_sdp_enabled()
    try:
        if num_threads > 0:
            torch.set_num_threads(num_threads)
        if deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        if not cudnn_attention:
            torch.backends.cuda.enable_cudnn_sdp(False)
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(det, warn_only=det_warn)
        torch.backends.cuda.enable_cudnn_sdp(cudnn_sdp)


def uses_buckets(padding: str, device: torch.device) -> bool:
    """Whether training batches are padded to bucket lengths (``train.padding``; auto: on CUDA)."""
    return padding == "buckets" or (padding == "auto" and device.type == "cuda")


# glibc's mallopt parameter: allocations of at least this many bytes are served by mmap.
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1 << 20


def return_freed_memory(threshold: int = MMAP_THRESHOLD) -> bool:
    """Have glibc serve blocks of ``threshold`` bytes or more (tensors, mostly) with mmap, so
    that a freed tensor's memory goes back to the system at once; True when set.

    By default glibc raises this threshold each time such a block is freed, after which
    tensors of the sizes a training step allocates and frees come from its heap, which grows
    with fragmentation and is not given back: resident memory crept up by 70-100 MiB every few
    steps (docs/benchmarks.md, "Memory"). 1 MiB: a one-seed default stage run peaks at about
    950 MiB against about 990 with 4 MiB, for about 5 % fewer samples/s (page faults of fresh
    mappings; 128 KiB cost 30 %). A process-wide setting that changes no computed value; a
    no-op outside glibc (macOS, musl)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, int(threshold)))
    except (OSError, AttributeError):
        return False


@contextmanager
def run_settings(cfg: Config, rt: Runtime) -> Iterator[None]:
    """:func:`torch_settings` for a training run of ``cfg`` on ``rt``: ``train.num_threads``
    (shared out under DDP on CPU), deterministic kernels on CPU, and no cuDNN attention on CUDA.
    cuDNN builds an attention plan for each new sequence length, which cost seconds per length
    on an H200 (bucketed batches bring dozens of lengths); the flash and memory-efficient
    kernels need none (docs/benchmarks.md, "GPU check"). Freed tensors go back to the system
    (:func:`return_freed_memory`)."""
    return_freed_memory()
    with torch_settings(rt.threads(cfg.train.num_threads), deterministic=rt.device.type == "cpu",
                        cudnn_attention=False):
        yield


def launch_local(nproc: int, module: str, argv: list[str], user_error: int) -> int:
    """Run ``python -m module *argv`` in ``nproc`` local processes, as ``torchrun --standalone``
    would; the exit code.

    A process that stops on a user error has printed its one line and exited with
    ``user_error``; the launcher then returns ``user_error`` too, without torch's failure
    report (M3SA_DEBUG=1 logs it).
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, rdzv_backend="c10d",
                          rdzv_endpoint="localhost:0", run_id=str(uuid.uuid4()), max_restarts=0)
    log.info("launching %d processes: python -m %s %s", nproc, module, " ".join(argv))
    debug = os.environ.get("M3SA_DEBUG", "") not in ("", "0")  # as stages._cli reads it
    elastic = logging.getLogger("torch.distributed.elastic")
    before = elastic.level
    if not debug:
        elastic.setLevel(logging.CRITICAL)
    try:
        elastic_launch(config, sys.executable)("-u", "-m", module, *argv)
    except ChildFailedError as err:
        codes = {f.exitcode for f in err.failures.values()}
        if debug:
            log.error("%s", err.format_msg())
        return user_error if user_error in codes else (max(codes) if max(codes) > 0 else 1)
    finally:
        elastic.setLevel(before)
    return 0
