"""Starting and stopping a vLLM engine inside a knowpack process: settings, environment, threads.

vLLM reads most of its switches from environment variables, some of them once at import and,
after an engine has started, from a cache (``vllm.envs.enable_envs_cache``). Every variable is
therefore set here, before vLLM is imported and before each engine starts, and the cache is
reset first so that a second engine in the same process sees its own settings.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal
from unittest import mock

from pydantic import Field

from knowpack.errors import KnowpackError
from knowpack.schema import StrictModel

logger = logging.getLogger(__name__)


class VLLMSettings(StrictModel):
    """The vLLM engine's own settings (the probe's settings stay in ProbeConfig).

    ``dtype``: float32 by default — on CPU vLLM's fp32 answers are token-identical to the
    transformers engine's, while bf16 kernels sum in another order and change about a quarter of
    the greedy answers. ``kv_cache_gib``: the KV cache's size (otherwise vLLM sizes it from free
    memory, which on a shared machine is most of it). ``adapters``: LoRA adapter folders this
    engine will serve; ``max_lora_rank`` is sized from them (an adapter above it would kill the
    engine), or given directly. ``batch_invariant``: vLLM's batch-invariant kernels (the
    ``VLLM_BATCH_INVARIANT`` switch), GPU only. ``in_process``: run vLLM's engine core and worker
    in this process (default on CPU: no second process competing for the cores, nothing left
    behind) or in their own processes (default on GPU). ``threads``: torch threads of an
    in-process CPU engine (default: the current torch setting, at most the usable cores).
    """

    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    kv_cache_gib: float = Field(1.0, gt=0, le=1024)
    adapters: list[str] = Field(default_factory=list)
    max_lora_rank: int | None = Field(None, ge=1)
    batch_invariant: bool = False
    in_process: bool | None = None
    threads: int | None = Field(None, ge=1)
    max_num_seqs: int = Field(128, ge=1, description="sequences decoded together")
    max_model_len: int | None = Field(None, ge=64, description="prompt + answer tokens per sequence (default: "
                                                                "the model's context, at most 2048)")


def gpu_present() -> bool:
    """Whether torch sees a CUDA device (the CPU build of torch never does)."""
    import torch

    return bool(torch.cuda.is_available())


def vllm_importable() -> bool:
    """Whether the vLLM package is installed in this environment (without importing it)."""
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def require_vllm() -> None:
    """Raise a clear error when vLLM is not installed here."""
    if not vllm_importable():
        raise KnowpackError("the vLLM backend needs the vllm package, which is not installed in this environment",
                            hint="run `make vllm` and use .venv-vllm/bin/knowpack (vLLM needs its own environment)")


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, not the machine's core count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def engine_threads(settings: VLLMSettings) -> int:
    """Torch threads for an in-process CPU engine: the setting, else torch's current count
    (which a caller may have set deliberately), never more than the usable cores."""
    import torch

    return max(1, min(settings.threads or torch.get_num_threads(), usable_cores()))


class EngineProcessScope:
    """Environment, threads and temporary files of one engine, from start-up to shutdown.

    In-process on CPU, vLLM would lower torch to one thread "for serving" unless OMP_NUM_THREADS
    is set, and its CPU worker replaces ``torch.set_num_threads`` by a no-op for the whole
    process; both are undone so the caller keeps its thread count and its control over it. In
    separate processes, vLLM's IPC sockets and the worker's rendezvous file go into a private
    folder (``VLLM_RPC_BASE_PATH``, ``TMPDIR``) that is removed at shutdown.
    """

    def __init__(self, settings: VLLMSettings, *, gpu: bool):
        self.settings = settings
        self.in_process = (not gpu) if settings.in_process is None else settings.in_process
        self.gpu = gpu
        self.threads = engine_threads(settings) if self.in_process and not gpu else None
        self.private_dir: Path | None = None
        self._started_resource_tracker = False
        self._children_before: set[int] = set()

    def variables(self) -> dict[str, str]:
        """The environment vLLM reads while it starts and serves this engine."""
        values = {
            "VLLM_NO_USAGE_STATS": "1",  # offline machines: no usage report
            "VLLM_DO_NOT_TRACK": "1",
            "HF_HUB_OFFLINE": "1",  # never fetch anything from a hub at run time
            "VLLM_ENABLE_V1_MULTIPROCESSING": "0" if self.in_process else "1",
            "VLLM_BATCH_INVARIANT": "1" if self.settings.batch_invariant else "0",
        }
        if self.threads is not None:
            values["OMP_NUM_THREADS"] = str(self.threads)
        if self.private_dir is not None:
            values["VLLM_RPC_BASE_PATH"] = str(self.private_dir)
            values["TMPDIR"] = str(self.private_dir)
        return values

    @contextlib.contextmanager
    def starting(self) -> Iterator[None]:
        """Around the engine's construction. The variables are set only for it: once the engine
        has started vLLM serves from its frozen copy of them, and the caller's environment (its
        TMPDIR, its OMP_NUM_THREADS for later subprocesses) is left as it was."""
        import torch

        if not self.in_process:
            self.private_dir = Path(tempfile.mkdtemp(prefix="knowpack-vllm-"))
            self._started_resource_tracker = _resource_tracker_pid() is None
            self._children_before = _child_pids()
        os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")  # vLLM logs through logging; the CLI decides
        saved_set_num_threads = torch.set_num_threads
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        try:
            # patch.dict restores the caller's environment afterwards, whatever happens
            with mock.patch.dict(os.environ, self.variables()):
                import vllm.envs

                vllm.envs.disable_envs_cache()  # another engine may have frozen the previous values
                yield
        except BaseException:
            self.close()
            raise
        finally:
            torch.set_num_threads = saved_set_num_threads
            if self.threads is not None:
                torch.set_num_threads(self.threads)

    def close(self) -> None:
        """After the engine has shut down: stop the resource tracker its start brought up, reap
        its processes and remove the private folder."""
        if self._started_resource_tracker:
            # multiprocessing's spawn starts a tracker process on first use and keeps it until this
            # process exits; when the engine was what started it, it goes with the engine (first:
            # it would not exit by itself while the engine's processes are awaited below).
            from multiprocessing import resource_tracker

            stop = getattr(resource_tracker._resource_tracker, "_stop", None)
            if stop is not None:
                stop()
            self._started_resource_tracker = False
        if self.private_dir is not None:
            _end_children(_child_pids() - self._children_before)
            shutil.rmtree(self.private_dir, ignore_errors=True)
            self.private_dir = None


def _child_pids() -> set[int]:
    import psutil  # a dependency of vLLM

    return {child.pid for child in psutil.Process().children()}


def _end_children(pids: set[int], grace: float = 30.0) -> None:
    """Wait for the engine's processes to exit and reap them (vLLM's shutdown signals them but
    may return before they are gone, leaving zombies); kill the ones that outlive ``grace``."""
    import psutil

    children = []
    for pid in pids:
        try:
            children.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    _, alive = psutil.wait_procs(children, timeout=grace)
    for child in alive:
        logger.warning("vLLM process %d did not exit after shutdown; killing it", child.pid)
        child.kill()
    psutil.wait_procs(alive, timeout=grace)


def _resource_tracker_pid() -> int | None:
    from multiprocessing import resource_tracker

    return getattr(resource_tracker._resource_tracker, "_pid", None)


def engine_arguments(settings: VLLMSettings, model_path: str, *, max_lora_rank: int | None,
                     gpu: bool) -> dict[str, Any]:
    """Keyword arguments of ``vllm.LLM`` for ``settings``.

    Chunked prefill is off: on CPU a prompt split over two steps makes vLLM rewind the request's
    random generator (``set_offset``), which CPU generators do not support, so every seeded
    request with a split prompt would kill the engine; whole prompts also let each few-shot
    prefix enter the prefix cache in one piece.
    """
    arguments: dict[str, Any] = {
        "model": model_path, "tokenizer": model_path, "dtype": settings.dtype,
        "trust_remote_code": False, "load_format": "safetensors", "generation_config": "vllm",
        "seed": 0, "enable_prefix_caching": True, "enable_chunked_prefill": False,
        "max_model_len": settings.max_model_len, "max_num_seqs": settings.max_num_seqs,
        "max_num_batched_tokens": max(settings.max_model_len, 4096),
        "kv_cache_memory_bytes": int(settings.kv_cache_gib * (1 << 30)),
        "enforce_eager": not gpu,  # no graph capture or compilation on CPU
        "disable_log_stats": True,
    }
    if max_lora_rank is not None:
        arguments.update(enable_lora=True, max_lora_rank=max_lora_rank, max_loras=1)
    return arguments


def check_batch_invariance(settings: VLLMSettings, *, gpu: bool) -> None:
    """Refuse batch-invariant mode where vLLM cannot provide it."""
    if settings.batch_invariant and not gpu:
        raise KnowpackError(
            "vLLM's batch-invariant mode (VLLM_BATCH_INVARIANT) does not run on CPU: vllm 0.32 replaces "
            "mean, softmax and bmm with Triton GPU kernels, and the engine fails on its first forward pass",
            hint="leave batch_invariant off on CPU (in float32 the CPU engine already matches the "
                 "transformers engine), or run on a GPU")
