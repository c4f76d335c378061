"""Every role prompt and message template, in one place and versioned.

The same :class:`PromptSet` is used to build SFT data, RL rollouts and evaluation, so the model is never
trained on one wording and tested on another (the authors' SFT and RL prompts differ: docs/design.md §9,
departure 9). Each run records ``PROMPTS_VERSION`` and the prompt set's name in its metadata; change the version
whenever a word below changes.

Roles: ``mta`` (meta-thinking agent: plans, never solves) and ``ra`` (reasoning agent: follows, answers in
``\\boxed{}``). Single-agent baselines (VRP, MRP) play the ``ra`` role with their own system prompt. The
LLM-as-a-judge task has its own sets (the verdict is ``[[A]]`` or ``[[B]]`` instead of a box), one per method and
mode, rendered questions from ``JUDGE_QUESTION``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

PROMPTS_VERSION = "2026.12.2"
FINISH_MARKER = "[FINISH]"
ACTIONS = ("DECOMPOSE", "REWRITE", "EMPTY")

MTA_SINGLE_TURN = (
    "You are the meta-thinker in a team of two. You do not solve problems; you plan how to solve them. "
    "Read the problem, name what is asked, choose an approach and break it into short numbered steps for "
    "the solver to follow. Never compute or state the final answer, and never write \\boxed{}: a plan that "
    "gives away the answer is penalised."
)

MTA_MULTI_TURN = (
    "You are the meta-thinker in a team of two: you guide the high-level thinking, a solver does the work. "
    "Each message you write is one short instruction to the solver: explore an angle, split the problem "
    "into steps, ask for one step to be worked out, check an intermediate result honestly, or go back and "
    "try another approach when something looks wrong. Do not solve the problem yourself. When you are "
    f"confident the solver's latest result is correct, end your message with {FINISH_MARKER} and the "
    "solver will write the final answer."
)

MTA_ACTIONS = (
    "You are the meta-thinker in a team of two. Choose how to help the solver and answer with JSON only, "
    'exactly {"action": ACTION, "content": TEXT}. ACTION is one of: "DECOMPOSE" (TEXT lists the sub-goals '
    'to solve in order), "REWRITE" (TEXT restates the problem more clearly), "EMPTY" (no guidance; TEXT is '
    '""). Do not solve the problem.'
)

RA = (
    "You are the solver in a team of two. A meta-thinker gives you instructions. Follow the latest "
    "instruction and reason step by step. When you give the final answer, put it in \\boxed{}."
)

VRP = "Solve the problem. Reason step by step, then put the final answer in \\boxed{}."

MRP = (
    "Solve the problem in two parts. First, under 'Plan:', think about how to approach it: what is asked, "
    "which method fits, how to break it into steps. Then, under 'Solution:', follow your plan step by step "
    "and put the final answer in \\boxed{}."
)

MTA_JUDGE = (
    "You are the meta-thinker in a team of two, planning how to judge which of two responses answers a "
    "user's prompt better. You do not give the verdict: name the criteria that matter for this prompt "
    "(correctness, following instructions, helpfulness, safety) and the order in which the solver should "
    "check them. Never write [[A]] or [[B]]."
)

JUDGE_RA = (
    "You are the solver in a team of two, judging which of two responses answers a user's prompt better. "
    "Follow the meta-thinker's instruction, reason step by step, and end with your verdict: [[A]] if "
    "response A is better, [[B]] if response B is better."
)

# The judge task in multi turn mirrors MTA_MULTI_TURN / RA: the meta-thinker closes with [FINISH] (without it
# every episode ends ``max_turns`` and unfinished masking scores it 0), the solver gives its verdict when asked.
MTA_JUDGE_MULTI_TURN = (
    "You are the meta-thinker in a team of two, guiding how to judge which of two responses answers a user's "
    "prompt better; a solver does the checking. Each message you write is one short instruction to the "
    "solver: name a criterion that matters for this prompt (correctness, following instructions, "
    "helpfulness, safety), ask it to check one claim or step of a response, compare the two on one point, or "
    "go back when a check looks wrong. Do not give the verdict yourself and never write [[A]] or [[B]]. When "
    f"you are confident the solver's comparison is sound, end your message with {FINISH_MARKER} and the "
    "solver will give the final verdict."
)

JUDGE_RA_MULTI_TURN = (
    "You are the solver in a team of two, judging which of two responses answers a user's prompt better. A "
    "meta-thinker gives you instructions. Follow the latest instruction and reason step by step. When you "
    "give your final verdict, write [[A]] if response A is better or [[B]] if response B is better."
)

VRP_JUDGE = (
    "Judge which of two responses answers the user's prompt better. Reason step by step, then end with your "
    "verdict: [[A]] if response A is better, [[B]] if response B is better."
)

MRP_JUDGE = (
    "Judge which of two responses answers the user's prompt better, in two parts. First, under 'Plan:', think "
    "about how to judge: what the prompt asks, which criteria matter (correctness, following instructions, "
    "helpfulness, safety), what to check in each response. Then, under 'Judgement:', follow your plan step by "
    "step and end with your verdict: [[A]] if response A is better, [[B]] if response B is better."
)

# Message templates: str.format fields only, and no literal braces (the authors' code shipped a literal "{{}}").
RA_FIRST_MESSAGE = "Problem:\n{question}\n\nInstruction from the meta-thinker:\n{instruction}"
RA_FIRST_MESSAGE_NO_GUIDANCE = "Problem:\n{question}\n\nThe meta-thinker gave no guidance. Solve it."
RA_FINAL_INSTRUCTION = "Write your final answer."
JUDGE_FINAL_INSTRUCTION = "Give your final verdict: [[A]] or [[B]]."
JUDGE_QUESTION = (
    "Which response answers the prompt better?\n\n[Prompt]\n{prompt}\n\n[Response A]\n{response_a}\n\n"
    "[Response B]\n{response_b}"
)
# Cold-start dialogues built from a model's own correct episodes (``rema.data.dialogues``): the MTA's closing
# message once the solver's result is right, and the boxed final answer that follows it.
COLD_START_FINISH = f"Your result is correct. {FINISH_MARKER}"
COLD_START_ANSWER = "The final answer is $\\boxed{{{answer}}}$."
# ... and their judge-task counterparts (``answer`` is the label, A or B)
COLD_START_JUDGE_FINISH = f"Your comparison is sound. {FINISH_MARKER}"
COLD_START_VERDICT = "My final verdict: [[{answer}]]"
ACTION_INSTRUCTION = {
    "DECOMPOSE": "Solve these sub-goals in order:\n{content}",
    "REWRITE": "The problem, restated:\n{content}",
}


@dataclass(frozen=True)
class PromptSet:
    """The system prompts of one method; ``name`` and ``version`` go into every run's metadata."""

    name: str
    mta: str | None
    ra: str
    version: str = PROMPTS_VERSION
    final_instruction: str = RA_FINAL_INSTRUCTION
    """Multi turn: what the RA is told when the MTA's [FINISH] message holds no other instruction."""

    def to_dict(self) -> dict:
        return asdict(self)


PROMPT_SETS = {
    "rema-single": PromptSet("rema-single", MTA_SINGLE_TURN, RA),
    "rema-multi": PromptSet("rema-multi", MTA_MULTI_TURN, RA),
    "rema-actions": PromptSet("rema-actions", MTA_ACTIONS, RA),
    "rema-judge": PromptSet("rema-judge", MTA_JUDGE, JUDGE_RA),
    "rema-judge-multi": PromptSet(
        "rema-judge-multi", MTA_JUDGE_MULTI_TURN, JUDGE_RA_MULTI_TURN, final_instruction=JUDGE_FINAL_INSTRUCTION
    ),
    "vrp": PromptSet("vrp", None, VRP),
    "mrp": PromptSet("mrp", None, MRP),
    "vrp-judge": PromptSet("vrp-judge", None, VRP_JUDGE),
    "mrp-judge": PromptSet("mrp-judge", None, MRP_JUDGE),
}
"""Judge-task sets (``rollout.task=judge``): ``rema-judge`` (single turn), ``rema-judge-multi`` (multi turn, with
[FINISH]), ``vrp-judge`` and ``mrp-judge`` (the single-agent baselines); ``Config.method_name`` picks one."""


def register_prompt_set(prompts: PromptSet) -> PromptSet:
    """Add ``prompts`` under ``prompts.name`` (``rollout.prompts=<name>`` selects it; docs/extending.md); a name
    already taken fails. ``mta=None`` makes a single-agent set (``rollout.method=vrp`` or ``mrp``)."""
    if prompts.name in PROMPT_SETS:
        raise ValueError(f"prompt set {prompts.name!r} is already registered")
    PROMPT_SETS[prompts.name] = prompts
    return prompts


def get_prompt_set(name: str) -> PromptSet:
    """Prompt set by name; an unknown name lists the valid ones."""
    try:
        return PROMPT_SETS[name]
    except KeyError:
        raise KeyError(f"unknown prompt set '{name}'; choose one of {sorted(PROMPT_SETS)}") from None


def strip_finish(text: str) -> tuple[str, bool]:
    """Remove the finish marker from an MTA message; returns ``(text_without_marker, had_marker)``."""
    had = FINISH_MARKER in text
    return text.replace(FINISH_MARKER, "").strip(), had


def ra_first_message(question: str, instruction: str) -> str:
    """The RA's first user message: the question plus the MTA's first instruction."""
    if not instruction.strip():
        return RA_FIRST_MESSAGE_NO_GUIDANCE.format(question=question)
    return RA_FIRST_MESSAGE.format(question=question, instruction=instruction.strip())


def action_instruction(action: str | None, content: str) -> str:
    """What the RA is told for a parsed action-set choice (EMPTY or invalid JSON: no guidance)."""
    if action in ACTION_INSTRUCTION and content.strip():
        return ACTION_INSTRUCTION[action].format(content=content.strip())
    return ""


# ---------------------------------------------------------------------------------------------------- teacher
# `rema distill` (rema.distill) asks a strong teacher model to rewrite a worked solution as a cold-start dialogue
# (docs/design.md §7: the paper's ~800 LIMO rewrites). The teacher is shown the student's own system prompts
# above, so it writes in the roles RL will play, and answers with tagged messages that rema.distill parses
# strictly (tags, not JSON: LaTeX backslashes inside JSON strings are where teachers slip). Versioned apart from
# PROMPTS_VERSION (the student's prompts do not change when these do; each dialogue records the teacher prompt's
# name@version): change TEACHER_VERSION whenever a word below changes. Templates: str.format fields; {{}} renders as {}.
TEACHER_VERSION = "2026.12.1"

_TEACHER_TEAM = (
    "You write training data for a team of two language-model agents that solve math problems together. Given "
    "a problem, a reference solution and its final answer, rewrite the solution as the exchange the team would "
    "have, in the agents' own voices. Keep the mathematics of the reference solution correct; you may reorganise "
    "it.\n\nThe meta-thinker's instructions:\n{mta}\n\nThe solver's instructions:\n{ra}\n\nRules:\n"
)

TEACHER_MULTI_TURN = _TEACHER_TEAM + (
    "1. The meta-thinker speaks first, then the two alternate; the solver speaks last. Use between 2 and "
    "{max_rounds} rounds (a round is one meta-thinker message and the solver's reply).\n"
    "2. A meta-thinker message is one short instruction: what to work out next, which approach to take, what to "
    "check, or to go back when a step looks wrong. It never does the computation itself and never states a "
    "result the solver has not found yet. Its first message must not state the final answer in any form and "
    "must not contain \\boxed.\n"
    "3. A solver message carries out only the latest instruction, step by step, showing the work.\n"
    f"4. Once the solver's result has been checked, the meta-thinker's last message says so and ends with "
    f"{FINISH_MARKER}; {FINISH_MARKER} appears nowhere else. The solver's last message then gives the final "
    "answer in \\boxed{{}}, equal to the reference answer.\n"
    "5. Keep each message under about {max_words} words.\n\n"
    "Reply with the dialogue only, every message inside its own tag, nothing before, between or after the tags:\n"
    f"<mta>...</mta>\n<ra>...</ra>\n...\n<mta>... {FINISH_MARKER}</mta>\n<ra>... \\boxed{{{{...}}}}</ra>"
)

TEACHER_SINGLE_TURN = _TEACHER_TEAM + (
    "1. Exactly two messages: the meta-thinker's plan, then the solver's solution.\n"
    "2. The plan names what is asked, chooses an approach and breaks it into short numbered steps. It computes "
    "nothing: no intermediate results, no final answer, no \\boxed.\n"
    "3. The solution follows the plan step by step, showing the work, and ends with the final answer in "
    "\\boxed{{}}, equal to the reference answer.\n"
    "4. Keep each message under about {max_words} words.\n\n"
    "Reply with the two messages only, each inside its tag, nothing before, between or after them:\n"
    "<mta>...</mta>\n<ra>...</ra>"
)

TEACHER_SINGLE_AGENT = (
    "You write training data for a language model that solves math problems. Given a problem, a reference "
    "solution and its final answer, rewrite the solution as the model's answer to the problem, in its own "
    "voice. Keep the mathematics of the reference solution correct; you may reorganise it.\n\n"
    "The model's instructions:\n{ra}\n\nRules:\n"
    "1. One message, written as the model's instructions ask, showing the work.\n"
    "2. It ends with the final answer in \\boxed{{}}, equal to the reference answer.\n"
    "3. Keep it under about {max_words} words.\n\n"
    "Reply with the message only, inside the tag, nothing before or after it:\n<ra>...</ra>"
)

TEACHER_REQUEST = "Problem:\n{question}\n\nReference solution:\n{solution}\n\nReference answer: {answer}"


@dataclass(frozen=True)
class TeacherPrompt:
    """How ``rema distill`` asks the teacher for one method's dialogue; ``name@version`` goes into every row."""

    name: str
    system: str
    """Template with ``{mta}``, ``{ra}`` (the student's system prompts), ``{max_rounds}`` and ``{max_words}``."""
    request: str = TEACHER_REQUEST
    version: str = TEACHER_VERSION

    @property
    def tag(self) -> str:
        return f"{self.name}@{self.version}"

    def messages(
        self, prompts: PromptSet, *, question: str, solution: str, answer: str, max_rounds: int, max_words: int
    ) -> list[dict[str, str]]:
        """The chat-completions ``messages`` asking for the dialogue of one solved problem."""
        system = self.system.format(mta=prompts.mta or "", ra=prompts.ra, max_rounds=max_rounds, max_words=max_words)
        user = self.request.format(question=question.strip(), solution=solution.strip(), answer=answer.strip())
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]


TEACHER_PROMPTS = {
    "rema-multi": TeacherPrompt("rema-multi", TEACHER_MULTI_TURN),
    "rema-single": TeacherPrompt("rema-single", TEACHER_SINGLE_TURN),
    "vrp": TeacherPrompt("vrp", TEACHER_SINGLE_AGENT),
    "mrp": TeacherPrompt("mrp", TEACHER_SINGLE_AGENT),
}
"""Teacher prompts by the student's prompt-set name (the methods whose dialogues ``rema sft`` trains on)."""


def get_teacher_prompt(name: str) -> TeacherPrompt:
    """Teacher prompt for a prompt set; one without (action set, judge task) lists the ones there are."""
    try:
        return TEACHER_PROMPTS[name]
    except KeyError:
        raise KeyError(f"rema distill writes dialogues for {sorted(TEACHER_PROMPTS)}, not '{name}'") from None
