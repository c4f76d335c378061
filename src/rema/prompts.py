"""Every role prompt and message template, in one place and versioned.

The same :class:`PromptSet` is used to build SFT data, RL rollouts and evaluation, so the model is never
trained on one wording and tested on another (the reference code's SFT and RL prompts differ). Each run
records ``PROMPTS_VERSION`` and the prompt set's name in its metadata; change the version whenever a word
below changes.

Roles: ``mta`` (meta-thinking agent: plans, never solves) and ``ra`` (reasoning agent: follows, answers in
``\\boxed{}``). Single-agent baselines (VRP, MRP) play the ``ra`` role with their own system prompt.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

PROMPTS_VERSION = "2026.12.1"
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

# Message templates: str.format fields only, and no literal braces (the reference code shipped a literal "{{}}").
RA_FIRST_MESSAGE = "Problem:\n{question}\n\nInstruction from the meta-thinker:\n{instruction}"
RA_FIRST_MESSAGE_NO_GUIDANCE = "Problem:\n{question}\n\nThe meta-thinker gave no guidance. Solve it."
RA_FINAL_INSTRUCTION = "Write your final answer."
JUDGE_QUESTION = (
    "Which response answers the prompt better?\n\n[Prompt]\n{prompt}\n\n[Response A]\n{response_a}\n\n"
    "[Response B]\n{response_b}"
)
# Cold-start dialogues built from a model's own correct episodes (``rema.data.dialogues``): the MTA's closing
# message once the solver's result is right, and the boxed final answer that follows it.
COLD_START_FINISH = f"Your result is correct. {FINISH_MARKER}"
COLD_START_ANSWER = "The final answer is $\\boxed{{{answer}}}$."
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

    def to_dict(self) -> dict:
        return asdict(self)


PROMPT_SETS = {
    "rema-single": PromptSet("rema-single", MTA_SINGLE_TURN, RA),
    "rema-multi": PromptSet("rema-multi", MTA_MULTI_TURN, RA),
    "rema-actions": PromptSet("rema-actions", MTA_ACTIONS, RA),
    "rema-judge": PromptSet("rema-judge", MTA_JUDGE, JUDGE_RA),
    "vrp": PromptSet("vrp", None, VRP),
    "mrp": PromptSet("mrp", None, MRP),
}


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
