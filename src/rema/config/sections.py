"""The config's sections: one dataclass per concern, every field documented.

Every field carries a docstring (the string literal right after it); that text is the single source of
truth and is what ``rema train --help-config`` prints and ``docs/config.md`` renders. Defaults follow the
authors' code (https://github.com/ziyuwan/ReMA-public) where it has one (docs/design.md §8).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .checks import validate
from .health import HealthConfig


@dataclass
class ModelConfig:
    name: str = "smollm2-135m"
    """Model: ``smollm2-135m`` (embedded, default), ``tiny-random`` (tests), a Hub id or a local folder."""
    ra_name: str | None = None
    """Separate weights only: the RA's model (None = a second copy of ``name``)."""
    dtype: str = "float32"
    """Dtype the weights are loaded in and kept in where they do not train (the frozen base under LoRA):
    float32 or bfloat16. Trained parameters are always kept in float32 (master weights: AdamW's small updates
    would round away in bf16); the compute dtype is ``train.autocast``'s."""
    device: str = "auto"
    """``auto`` (cuda if available, else cpu), ``cpu``, ``cuda``, ``cuda:1``..."""
    lora_r: int = 0
    """LoRA rank; 0 = full fine-tuning. With LoRA the KL reference is the base with the adapter off."""
    lora_alpha: int = 16
    """LoRA alpha (scale = alpha / r)."""
    lora_dropout: float = 0.0
    """LoRA dropout."""
    lora_fused: bool = True
    """Run LoRA layers through rema's fused forward/backward (``rema.models.lora``): the same sums as peft's forward
    without its output-sized temporaries, so a faster update (docs/results.md); false = peft's own forward."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass to save memory."""
    checkpoint_layers: float = 1.0
    """With ``gradient_checkpointing``: the share of decoder layers that recompute their activations, evenly
    spread (1 = all; 0.5 = every other layer keeps its activations: less recomputation, more memory). The
    update's time and peak fall between those of all layers and of no checkpointing (docs/results.md)."""


@dataclass
class RolloutConfig:
    method: str = "rema"
    """``rema`` (MTA + RA), ``vrp`` (single agent, CoT prompt) or ``mrp`` (single agent, meta-think then solve)."""
    mode: str = "multi_turn"
    """``single_turn`` (plan, then answer) or ``multi_turn`` (MTA and RA alternate until [FINISH])."""
    action_set: bool = False
    """Single turn only: the MTA answers JSON {"action": DECOMPOSE|REWRITE|EMPTY, "content": ...}."""
    task: str = "math"
    """How the RA's final response is graded (``rema.rewards.tasks``): ``math`` (against a reference answer),
    ``judge`` (pairwise verdict [[A]]/[[B]]) or a task registered with ``register_task`` (docs/extending.md)."""
    prompts: str | None = None
    """A prompt set registered with ``rema.prompts.register_prompt_set`` (a new task's prompts: docs/extending.md)
    to play instead of the one ``method``/``mode``/``action_set``/``task`` imply (None). It must fit ``method``: an
    MTA prompt for ``rema``, none for ``vrp``/``mrp``."""
    max_turns: int = 30
    """Multi-turn: most MTA→RA rounds before the episode ends with ``max_turns``."""
    max_tokens_per_turn: int = 512
    """Token limit of one message; hitting it marks the turn truncated."""
    max_context_tokens: int = 4096
    """An agent's context plus ``max_tokens_per_turn`` must fit here, else the episode ends ``context_exceeded``."""
    stop_on_truncation: bool = False
    """End the episode (``truncated``) as soon as a turn hits its token limit."""
    samples_per_question: int = 16
    """G: episodes sampled per question (the GRPO group size)."""
    temperature: float = 1.0
    """Sampling temperature for training rollouts (0 = greedy)."""
    top_p: float = 1.0
    """Nucleus sampling for training rollouts."""
    eval_temperature: float = 0.0
    """Temperature for evaluation (greedy by default, as in the paper)."""
    engine: str = "auto"
    """Generation backend: ``vllm`` (when installed), ``hf`` (transformers, always available), or ``auto``:
    vLLM where it is importable, else transformers (the environment variable ``REMA_ENGINE`` overrides what
    ``auto`` picks). ``auto`` is resolved once, when a command builds its config: a run's ``config.yaml`` and
    ``meta.json`` name the engine that ran, and ``--resume`` keeps it."""
    vllm_dtype: str = ""
    """vLLM's compute dtype; empty = bf16 on CUDA and on CPUs with native bf16 (AVX-512 BF16), else fp32."""
    vllm_kv_cache_gib: float | None = None
    """GiB reserved for vLLM's KV cache. None: 1 GiB on CPU (trainer and engine share the machine's memory);
    on a GPU, what ``vllm_gpu_memory_utilization`` leaves after the weights."""
    vllm_gpu_memory_utilization: float = 0.5
    """vLLM on a GPU: share of GPU memory it may take (weights + KV cache); the trainer uses the rest."""
    vllm_cpu_threads_bind: str = "all"
    """vLLM on CPU: cores its worker computes on (``VLLM_CPU_OMP_THREADS_BIND``): ``all`` (every core this
    process may use; the trainer waits during generation), a list such as ``0-3``, or empty for vLLM's
    default (all but one core)."""
    vllm_in_process: bool = True
    """vLLM's engine in the trainer's own process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, as TRL's colocated
    mode does) instead of two processes of its own: one torch runtime instead of three (less memory), no
    engine process busy-polling beside the computing one (faster rollouts on few cores), a quicker start
    (docs/results.md). ``false`` gives vLLM's own processes. Process-wide: vLLM freezes
    its environment settings when its first engine starts."""
    vllm_enforce_eager: bool = False
    """``true``: vLLM without torch.compile (and on GPUs without CUDA graphs). The default compiles: the
    engine's first start on a machine is slow (inductor compiles; its cache in ``/tmp/torchinductor_<user>``
    shortens later starts; eager starts in seconds) and rollouts run faster (docs/results.md). ``true`` for
    short interactive runs on a fresh machine. Without a C++ compiler (inductor needs one on CPU) the engine runs
    eager."""
    vllm_sleep: int = 0
    """vLLM on a GPU: put the engine to sleep between the rollout and the update so the update gets its memory:
    1 frees the KV cache and moves the weights to host memory, 2 frees both (the weight sync after the update
    reloads them). 0 keeps it awake. CPUs have no sleep mode (see ``vllm_release_kv``)."""
    vllm_tensor_parallel_size: int = 1
    """Under several processes (torchrun / accelerate): how many consecutive ranks one vLLM engine spans,
    each holding a slice of every layer (vLLM's ``external_launcher``). For a model whose weights and KV cache
    do not fit one GPU beside the trainer, or to decode faster. The ranks of a group generate together (each
    keeps training on its own share of the questions); it must divide the number of processes. 1: one whole
    engine per process."""
    vllm_release_kv: bool = True
    """vLLM on CPU: between the rollout and the update, return its KV cache's pages to the OS (vLLM has no
    sleep mode on CPU; the prefix cache is dropped first), so the update does not run beside an idle
    ``vllm_kv_cache_gib`` of resident memory."""


@dataclass
class RewardConfig:
    mask_unfinished: bool = True
    """Episodes that did not end ``finished`` get reward 0 (the authors' default for multi-turn)."""
    format_terms: bool = False
    """Single turn: add each agent's format term (MTA leaks no answer; RA ends with one \\boxed{})."""
    format_penalty: float = 1.0
    """Size of a format term's penalty."""
    plan_leak_penalty: float = 0.0
    """Subtracted from the MTA's reward (only the MTA's) when its first message gives the answer away
    (a box, "the answer is ...", or ending on "= gold"; ``rewards.mta_format``). One term per episode on the
    message written before the RA has worked, so an agent cannot farm it turn by turn (the exploit of per-turn
    terms, docs/design.md §2). 0 = off (the authors' code: shared sparse reward only). Not added where the single-turn
    ``format_terms`` already apply (they include the same check)."""
    extra_terms: dict[str, float] = field(default_factory=dict)
    """Shaping terms registered with ``rema.rewards.terms.register_term``, by name, each with the number passed to it
    as ``penalty`` (what it adds to an agent's reward when it fires; negative to penalise), e.g.
    ``reward.extra_terms={truncation: -0.2}``. Added after the terms the keys above select, in every mode
    (docs/extending.md). One ships with rema: ``restatement`` (``{restatement: -0.5}``: charged to the writer of an
    episode's first message when it does not restate the question as an expression worth the answer, for cold
    starts in ``sft.teacher_style=reduce``; docs/training_eval.md)."""
    action_format_penalty: float = 0.0
    """``rollout.action_set`` only: subtracted from the MTA's reward when its choice is not the JSON object the
    prompt asks for (no object, unparsable, or an action outside DECOMPOSE/REWRITE/EMPTY). Without it an invalid
    choice costs the MTA nothing (the RA just gets no guidance), so it can drift off the format whose actions
    the paper's Fig. 4 reads. 0 = off (the paper names no such term)."""
    unboxed_credit: float = 1.0
    """Math: the share of the correctness reward that a right final answer earns when it is not in a
    ``\\boxed{}`` (found instead on a ``####`` line, in "the answer is ...", or as the last expression).
    1 = any extraction counts (the authors' code); 0 = only boxed answers count; in between a model that does not
    box yet still gets a signal, and boxing is always paid more. Accuracy in evaluations is not affected."""
    grader_timeout_s: float = 5.0
    """Hard per-item timeout of the math grader (a timeout scores 0 and is counted)."""
    grader_workers: int = 1
    """Grader worker processes."""


@dataclass
class AlgoConfig:
    advantage: str = "grpo"
    """Advantage estimator: ``grpo``, ``dr_grpo``, ``rloo``, ``reinforce_pp`` (docs/design.md §3), or one registered
    with ``rema.algos.register_advantage_estimator`` (docs/extending.md). ``grpo``, ``dr_grpo`` and ``rloo`` score
    whole episodes; ``reinforce_pp`` takes per-token rewards (``gamma``, ``kl_in_reward``)."""
    ratio_level: str = "turn"
    """``token`` (PPO ratio per token) or ``turn`` (one ratio per turn, ReMA's multi-turn choice). Acts only when
    π_old differs from π, i.e. with ``train.mini_batches`` > 1 or ``train.ppo_epochs`` > 1: with one of each (every
    shipped config) every ratio is 1, the clip never acts, and ``token`` and ``turn`` give the same gradient; only
    ``agg`` (the normalisation) then changes the update (docs/design.md §5). (``train.recompute_old_logp=false``
    takes π_old from the sampler: ratios then differ from 1 by the engines' numerical mismatch only.)"""
    ratio_mean: str = "geometric"
    """Turn ratio: ``geometric`` = exp(mean log-ratio) (the authors' code) or ``arithmetic`` = mean ratio (the
    paper). Like ``ratio_level``, it changes nothing with one PPO epoch and one mini-batch (docs/design.md §5)."""
    agg: str = "trajectory"
    """Loss aggregation: ``token``, ``turn`` or ``trajectory`` (mean over turns, then episodes)."""
    clip_eps: float = 0.2
    """PPO clip range (low side, and high side unless ``clip_eps_high`` is set)."""
    clip_eps_high: float | None = None
    """Upper clip range (DAPO clip-higher); None = ``clip_eps``."""
    dual_clip: float | None = 3.0
    """Dual-clip constant c for negative advantages; null disables."""
    log_ratio_clamp: float = 3.0
    """Clamp on the log-ratio before exponentiating."""
    gamma: float = 1.0
    """REINFORCE++ discount (returns reset at every turn)."""
    kl_coef: float = 0.0
    """KL(π‖π_ref) weight (k3 estimator); 0 = off (the authors' default)."""
    kl_in_reward: bool = False
    """REINFORCE++: fold the KL penalty into the token rewards instead of the loss."""
    entropy_coef: float = 0.0
    """Entropy bonus weight; 0 = off."""
    adv_eps: float = 1e-6
    """ε in the GRPO std division."""


@dataclass
class TrainConfig:
    steps: int = 500
    """RL steps (one rollout + update each); 0 evaluates the starting model (after the cold start, if any) and
    stops: a prompting-only baseline."""
    questions_per_step: int = 128
    """Questions per step; each is sampled ``samples_per_question`` times."""
    ppo_epochs: int = 1
    """Passes over each step's batch."""
    mini_batches: int = 1
    """Optimizer steps per epoch (the batch is split into this many mini-batches)."""
    micro_batch_tokens: int = 8192
    """Token budget of one forward/backward (gradient accumulation fills a mini-batch)."""
    share_prefix: bool = True
    """The update computes each GRPO group's common prefix (system prompt and question) once: rows packed as
    [prefix, remainder 1, remainder 2, ...], each remainder seeing the prefix and itself, so log-probs and
    gradients are those of the separate rows. ``sdpa`` switches to ``rema.train.packed_attention`` (attention
    per segment); under ``train.compile`` or ``eager`` packs run under a dense mask while that pays
    (``rema.train.batch.plan_micro_batches``). Other attention implementations train unpacked."""
    malloc_mmap_threshold_mb: float = 4.0
    """glibc (Linux), during the update and the cold start on CPU: tensors of at least this many MiB get their
    own memory map, returned to the OS when freed (glibc's own threshold climbs to 32 MiB, after which the
    update's temporaries fragment the heap and freed activations stay). Lower lowers the update's peak at the
    same speed; 1 MiB is slower (page faults). Generation runs at 32 MiB. docs/results.md. 0 = leave glibc."""
    lr: float = 1e-6
    """Learning rate (AdamW)."""
    warmup_steps: int = 0
    """Linear warm-up steps."""
    lr_schedule: str = "constant"
    """``constant`` or ``cosine`` after warm-up."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    grad_clip: float = 1.0
    """Gradient-norm clip."""
    shared_weights: bool = True
    """One model plays both roles (multi-turn default); False = separate MTA and RA models."""
    switch_freq: int = 10
    """Separate weights: update only one agent, switching every this many steps, MTA first."""
    update_agents: str = "both"
    """Which agents RL updates: ``both``, or ``mta`` / ``ra`` to keep the other one frozen at its starting (e.g.
    cold-start) weights, as in the paper's Fig. 3 ablation (RL under a fixed SFT-trained MTA). Separate weights:
    the frozen agent gets no optimizer and ``switch_freq`` never switches to it. Shared weights: the frozen role
    still plays and is scored, and advantages are computed on all rows (GRPO groups whole, REINFORCE++ whitening
    as with ``both``) before its rows are left out of the loss."""
    strategy: str = "ddp"
    """How several processes (``torchrun`` / ``accelerate launch``) share the work: ``ddp`` (every process holds
    the whole model and optimizer; gradients are summed) or ``fsdp`` (PyTorch FSDP2, ``fully_shard``: each
    decoder layer, then the root, sharded over the processes, so parameters, gradients and optimizer state
    take 1/N of the memory each; needed for 7-8B full fine-tuning on 80 GB GPUs). One process: no effect."""
    fsdp_cpu_offload: bool = False
    """``train.strategy=fsdp``: keep the parameter shards, their gradients and the optimizer state in CPU memory
    (FSDP2's ``CPUOffloadPolicy``), moving each layer to the GPU for its forward and backward: fits larger
    models at the cost of host-device copies. Weights gathered outside a forward (the vLLM sync, the export,
    checkpoints) are moved to the GPU before they are gathered."""
    dist_timeout_min: float = 60.0
    """Several processes: how long (minutes) a collective waits for the other ranks before the job fails. Ranks
    wait on each other through a whole rollout, an evaluation and rank 0's writes (checkpoints, the export), so
    it is generous; NCCL's own default is 10 minutes. The process group is ``cuda:nccl,cpu:gloo`` on GPUs
    (``rema.train.distributed``)."""
    autocast: str = "auto"
    """Compute dtype of the trainer's forward/backward: ``bf16`` (``torch.autocast`` to bfloat16; fp32 master
    weights, optimizer state and log-softmax; under ``train.strategy=fsdp`` on CUDA, FSDP's mixed-precision
    policy), ``off`` (the parameters' dtype, fp32) or ``auto`` (bf16 where the device computes it natively:
    CUDA, CPUs with AVX-512 BF16/AMX; else off)."""
    compile: bool = False
    """``torch.compile`` each decoder layer of the trained model(s) in place (dynamic shapes), so inductor fuses
    the elementwise work around the matmuls (casts, norms, rotary, LoRA's scale-and-add). Every forward of
    the trainer's model then runs compiled: the update, the cold start's SFT, the post-sync check. The first
    compilation takes tens of seconds on CPU (inductor's cache shortens later starts; a C++ compiler is
    needed on CPU), so it pays off on long runs, not on the 8-step demo (docs/results.md)."""
    recompute_old_logp: bool = True
    """Recompute π_old under the training forward (True) or use the sampler's log-probs (False)."""
    seed: int = 0
    """Seed for data order, sampling and initialisation."""
    eval_every: int = 10
    """Held-out evaluation every N steps (0 = never)."""
    eval_before_cold_start: bool = True
    """With ``sft.cold_start``: also evaluate before it (logged as ``base_eval/*``), so the report shows what
    the cold start itself did. One more pass over ``data.eval``; grids that measure the untrained model in an
    arm of their own turn it off."""
    save_every: int = 50
    """Checkpoint every N steps (and on Ctrl-C); 0 = only at the end and on a stop."""
    sample_every: int = 1
    """Write sample dialogues every N steps."""
    samples_to_log: int = 8
    """Dialogues written per sampling step."""
    nan_patience: int = 3
    """Stop after this many consecutive steps with a non-finite loss or gradient (each one is skipped)."""
    keep_checkpoints: int = 2
    """How many step checkpoints to keep on disk, besides the healthy ones a rollback may need (those of the
    last ``train.health.patience`` + 1 steps and the newest one before them)."""
    health: HealthConfig = field(default_factory=HealthConfig)
    """Health checks on every step and what they do when they fire: the ``train.health`` keys (docs/health.md)."""


@dataclass
class DataConfig:
    train: str = "synthetic:levels=1,2,3:n=2000:seed=0"
    """Training questions: a benchmark name, a file, ``synthetic:...`` or ``hf:owner/name[:config][:split]``. A name
    or file with ``:split=train:heldout=N`` leaves N problems out, stratified and seeded, for ``data.eval`` to take
    with ``:split=heldout:heldout=N`` (the judge task's RewardBench split, docs/judge.md)."""
    eval: str | list[str] | None = "synthetic:levels=1,2,3:n=60:seed=1"
    """Held-out questions for periodic evaluation (None = none), in the forms of ``data.train``; a list
    (``data.eval=[gsm8k,math500]``) evaluates each set and logs ``eval/<set>/...`` plus ``eval/avg/...``, the
    unweighted mean over sets (the paper's Fig. 5 averages its 7 benchmarks); one set logs ``eval/...``. In a
    dotted list quote a spec holding commas (``'synthetic:levels=1,2:n=50'``) or write ``levels=1-2``."""
    eval_limit: int | None = None
    """Use at most this many held-out questions of each ``data.eval`` set."""
    data_dir: str | None = None
    """Folder with local benchmark JSONL (e.g. ../shared/data); None = the Hugging Face Hub."""
    question_field: str | None = None
    """Field holding the question (default: problem, question or prompt)."""
    answer_field: str | None = None
    """Field holding the reference answer (default: answer, final_answer or solution)."""
    levels: list[int] | None = None
    """Keep only these difficulty levels (MATH ``Level N``), in ``data.train`` and in every ``data.eval`` set
    (a set without levels then has no problems: give one set its own filter instead, e.g. ``math500:levels=3-5``)."""

    @property
    def eval_specs(self) -> list[str]:
        """``eval`` as a list of data specs (one string is one set; None is none)."""
        if self.eval is None:
            return []
        return [self.eval] if isinstance(self.eval, str) else list(self.eval)


@dataclass
class SFTConfig:
    cold_start: bool = False
    """``rema train``: fine-tune on dialogues (below) before the first RL step, the cold start of docs/design.md §7.
    ``rema sft`` always does this step and then stops."""
    data: str = "self"
    """Dialogues to fine-tune on: a JSONL file (one dialogue per line: question, answer, turns), or ``self``:
    sample episodes from the model itself on ``data.train``, keep those with a correct answer, and write them
    in the method's format (short clean turns, the MTA's [FINISH], a boxed final answer; for
    ``rollout.task=judge`` a right [[A]]/[[B]] verdict), or ``teacher``: a program teacher writes one exact
    dialogue per synthetic training question from its expression, no sampling (multi-turn: the MTA's plan
    (``teacher_style``), one MTA instruction and one RA step per round, then [FINISH] and the boxed answer, so a
    k-step problem needs ``rollout.max_turns`` >= k + 1; single-turn: a plan without results, then the steps;
    vrp/mrp: the same steps in one message; several seeded phrasings each). ``teacher`` needs synthetic
    ``data.train`` and no judge task or action set. Judge dialogue files give the pair: docs/judge.md."""
    teacher_style: str = "plan"
    """``teacher``, multi-turn ReMA: how the meta-thinker leads. ``plan``: its first message lists the whole
    numbered plan before "Step 1: ...", each later instruction names its step, and it finishes once the plan's last
    step is done, so the decision to stop is read off its own plan. ``steps``: one instruction per round ("First,
    add 3 and 4.") and [FINISH] after the last. ``reduce``: it restates the question as an expression and names
    the first operation, then each round restates what is left with the reasoner's result in place ("Now it is
    15 × 2 - 18. Next, multiply 15 by 2.") and finishes when one number is left: the same move at any depth, so
    nothing in it counts steps (Table 1 uses it). ``reduce_solver``: ``reduce``, but the meta-thinker's first
    message asks the reasoner to write the question as an expression and do its first operation, so the reading
    sits at the head of a computing message, where the single agent's sits (at 135M the meta-thinker misread
    two-step stories more often than one agent taught the same moves; the reasoner reads more of them right after
    the cold start, but after RL it was not ahead of ``reduce`` on fresh questions: docs/reproduction.md).
    ``reduce_givens``: ``reduce``, with the meta-thinker's first message opening on the question's numbers in the
    order it gives them ("Given: 5, 3 and 8."), copied before any structure is read into them, so that an
    expression leaving one out stands next to the list that has it (the dropped term was the 135M meta-thinker's
    commonest misreading). At 135M it does not: the list leaves the number out too, and both arms' cold starts
    read held-out stories worse than with ``reduce`` (docs/reproduction.md). ``reduce`` and ``reduce_givens``
    also apply to ``rollout.method=vrp``: each step and what it leaves, in one message (Table 1's control arm).
    The default is ``plan`` because with ``steps`` the 135M meta-thinker never decomposed a two-step problem
    after its cold start (nor a held-out two-step wording after 256 dialogues and RL), and with ``plan`` it
    did; ``reduce`` was ahead of ``plan`` out of distribution by less than the seeds spread (docs/reproduction.md)."""
    questions: int = 64
    """``self`` and ``teacher``: training questions to draw (seeded by ``sft.seed``)."""
    seed: int | None = None
    """Seed of the cold start: which questions are drawn and the order of the fine-tuning (None = ``train.seed``).
    A fixed value gives every seed of an RL grid the same cold start, so the seeds measure the spread of RL."""
    cache: str | None = None
    """A folder of finished cold starts to reuse (None = none). A cold start whose inputs (model, LoRA, rollout
    format, ``data.train``, the ``sft`` settings and its seed) match one there is loaded instead of trained
    again: its trained weights and dialogues; otherwise it is trained and stored there. Single process only
    (under several processes it is trained as usual). ``rema reproduce`` points every run of a folder at one."""
    samples: int = 4
    """``self``: episodes sampled per question."""
    temperature: float | None = None
    """``self``: sampling temperature (None = ``rollout.temperature``)."""
    max_per_question: int = 2
    """``self``: keep at most this many dialogues of one question (distinct ones)."""
    epochs: int = 2
    """Passes over the dialogues."""
    lr: float = 1e-4
    """Learning rate of the fine-tuning (AdamW, constant); the RL optimizer starts fresh afterwards."""
    batch_dialogues: int = 8
    """Dialogues per optimizer step (both roles' rows of each)."""
    over_limit: str = "refuse"
    """A dialogue that RL could not reproduce under the ``rollout`` limits (a message over ``max_tokens_per_turn``, a
    turn that starts past ``max_context_tokens - max_tokens_per_turn``; more rounds than ``max_turns`` are always
    refused): ``refuse`` (``rema train`` / ``rema sft`` check a dialogue file before any model loads and stop, naming
    the dialogue) or ``truncate`` (messages are cut to ``max_tokens_per_turn``, as the sampler would cut them, and
    dialogues that still do not fit are left out; counted as ``sft/data/truncated_messages`` and
    ``sft/data/dropped_dialogues``)."""


@dataclass
class DistillConfig:
    """``rema distill``: cold-start dialogues written by a teacher model from solved problems (docs/distill.md), in
    the format of ``rollout.method``/``mode``/``max_turns``, so that ``rema sft`` under the same config reads them."""

    input: str | None = None
    """Solved problems: a .jsonl/.json/.parquet file, a ``datasets`` folder or ``hf:owner/name[:config][:split]``
    (``hf:GAIR/LIMO``, the paper's source). Columns: ``data.question_field``, ``data.answer_field``,
    ``solution_field``."""
    solution_field: str = "solution"
    """Column with the worked solution the teacher rewrites (a GSM8K ``answer`` ending in ``#### N`` is its own)."""
    id_field: str | None = None
    """Column with a stable row id, the key by which a re-run skips finished rows (None = ``id``, ``unique_id``,
    ``idx``, else the row number, stable while the file only grows)."""
    split: str | None = None
    """Split of a Hub dataset or folder (None = the only one; an ``hf:`` spec's own split wins)."""
    limit: int | None = None
    """Distil only the first N rows (None = all): try a teacher and its prompt on a few before paying for all."""
    out: str = "dialogues.jsonl"
    """Kept dialogues are appended here (an ``sft.data`` file); rejected rows go beside it to ``<stem>.rejected.jsonl``
    with their reason. An existing pair is resumed: rows in either file are not asked again."""
    retry_rejected: bool = False
    """Ask again for rows recorded as rejected (a new draw at ``temperature``) instead of skipping them."""
    base_url: str | None = None
    """The teacher's OpenAI-compatible endpoint, e.g. ``http://localhost:8000/v1`` for ``vllm serve`` (None =
    ``$OPENAI_BASE_URL``, else OpenAI's API)."""
    teacher: str | None = None
    """The teacher model's name at that endpoint (``gpt-4o``; for ``vllm serve`` the path or
    ``--served-model-name``)."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the API key, so the key itself never lands in a config, a log or a shell
    history. Unset is allowed with ``base_url`` (local servers started without ``--api-key``)."""
    concurrency: int = 8
    """Requests in flight at once: a teacher answers one request in tens of seconds, so parallel requests multiply
    throughput; lower it when the endpoint rate-limits (429s in the progress bar)."""
    max_retries: int = 5
    """Retries of one request after a 429, 408/409/5xx, timeout or dropped connection; then the row is left for the
    next run (not recorded)."""
    backoff_s: float = 1.0
    """First wait before a retry, doubled at each further one (minus up to 25% jitter); a server's Retry-After wins."""
    timeout_s: float = 600.0
    """Seconds one request may take before it is retried: a long dialogue from a slow or busy teacher takes minutes."""
    temperature: float = 0.7
    """Teacher sampling temperature: some variety across hundreds of dialogues, and a different draw when a
    rejected row is asked again."""
    max_tokens: int = 8192
    """Completion-token limit of one reply (the whole dialogue); a reply cut there is rejected as ``truncated``."""


@dataclass
class LogConfig:
    run_dir: str | None = None
    """Where the run writes config, metrics, samples and checkpoints (default runs/<name>-<time>)."""
    name: str = "rema"
    """Run name (used in the default run dir and in wandb)."""
    tensorboard: bool = True
    """Also write metrics to tensorboard."""
    wandb: bool = False
    """Also log to Weights & Biases (needs ``pip install wandb``)."""
    progress: bool = True
    """Show a live progress line."""


@dataclass
class EvalConfig:
    """``rema eval`` / ``rema compare``: what to evaluate and where the results go. How to generate comes
    from the other sections (``rollout.eval_temperature``, ``rollout.max_turns``, ``model.dtype``, ...)."""

    benches: list[str] = field(default_factory=lambda: ["gsm8k"])
    """Benchmarks: names (gsm8k math500 aime24 amc23 gaokao2023en minerva_math olympiadbench), file paths, or
    ``hf:owner/name[:config][:split]``. Give a list (``eval.benches=[gsm8k, math500]``) when a spec has commas."""
    n: int = 1
    """Samples per question: pass@k and maj@k for n > 1 (then ``rollout.eval_temperature`` must be > 0)."""
    limit: int | None = None
    """Evaluate the first N questions of each benchmark (None = all)."""
    batch_size: int = 16
    """Questions per chunk; records are written after every chunk, so an interrupted eval resumes there."""
    seed: int = 0
    """Seed of ``rema eval`` and ``rema chat`` (sampling; ``tiny-random``'s weights); training uses ``train.seed``."""
    run: str | None = None
    """A training run folder: evaluate its ``final/`` weights. Its ``config.yaml`` is the base config (method,
    limits, dtype) unless a config file is given."""
    checkpoint: str | None = None
    """With ``run``: evaluate a checkpoint instead of ``final/``: ``step_N`` (or ``N``), ``latest``, ``best`` (the
    checkpoint marked healthy by ``train.health`` with the best held-out accuracy at its step), ``final``, or a
    model folder. Checkpoints hold training state, so one is exported to ``RUN/exports/step_N`` on first use (as
    ``rema export`` does) and that folder is reused."""
    label: str | None = None
    """Model name in tables and in the default output folder (None = the model's, or the run folder's, name)."""
    out: str | None = None
    """Output folder (None = ``evals/<label>-<method>-<time>``); an existing one is resumed when its settings match."""
    task: str = "auto"
    """File / ``hf:`` benchmarks: ``math``, ``judge`` (pairwise preference rows) or ``auto`` (judge when the rows
    have prompt/response columns). Questions and answers are read from ``data.question_field`` /
    ``data.answer_field``."""
    answer_format: str = "auto"
    """File / ``hf:`` benchmarks: how answers are written: ``boxed`` (last ``\\boxed{}``), ``gsm8k`` (``#### N``
    tail), ``raw`` (as is) or ``auto`` (whichever is found)."""
    split: str | None = None
    """File / ``hf:`` benchmarks: the split to read (None = the only one; an ``hf:`` spec's own split wins)."""
    id_field: str | None = None
    """File / ``hf:`` benchmarks: the id column (None = ``id``, ``unique_id``, ``idx``, else the row number)."""
    level_field: str | None = None
    """File / ``hf:`` benchmarks: the difficulty column (None = ``level``, then ``difficulty``)."""


@dataclass
class ServeConfig:
    """``rema serve``: the HTTP server. What it runs (method, mode, task, limits per turn and per context) is
    the other sections' (a run's own ``config.yaml`` plus overrides); the default temperature of a request is
    ``rollout.eval_temperature``."""

    host: str = "127.0.0.1"
    """Address to listen on. The server has no authentication: 127.0.0.1 keeps it to this machine, 0.0.0.0
    opens it to the network (put it behind a proxy that authenticates)."""
    port: int = 8000
    """TCP port to listen on."""
    model_id: str | None = None
    """The model's name in ``/v1/models``, which a request's ``model`` must match (None = the run folder's name,
    else the model's)."""
    max_concurrency: int = 64
    """Requests held at once (being answered or waiting for the next batch), and so the largest batch; one more
    gets 429 (retry later) rather than an unbounded queue whose waits grow without limit."""
    batch_wait_ms: float = 50.0
    """After a request reaches an idle server, wait this long for others to join its batch, so a burst is one
    batch (one engine call per turn) instead of one request alone and then the rest: 20 requests sent at once by
    one ``AsyncOpenAI`` client reach the server over more than 10 ms (docs/results.md)."""
    max_request_bytes: int = 1000000
    """Largest request body; a larger one gets 413 (the question must also fit ``rollout.max_context_tokens``)."""


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    log: LogConfig = field(default_factory=LogConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)

    def __post_init__(self) -> None:
        validate(self)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def method_name(self) -> str:
        """The prompt-set name: ``rollout.prompts``, else the one method/mode/action_set/task imply."""
        r = self.rollout
        if r.prompts:
            return r.prompts
        if r.task == "judge":  # the judge task's own sets: verdicts [[A]]/[[B]], [FINISH] in multi turn
            if r.method != "rema":
                return f"{r.method}-judge"
            return "rema-judge-multi" if r.mode == "multi_turn" else "rema-judge"
        if r.method != "rema":
            return r.method
        if r.action_set:
            return "rema-actions"
        return "rema-multi" if r.mode == "multi_turn" else "rema-single"
