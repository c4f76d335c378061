"""``rema distill``: cold-start dialogues written by a teacher model (docs/design.md §7: the paper fine-tunes on
~800 LIMO solutions a strong teacher rewrote as meta-thinker/reasoner dialogues).

=================  ==========================================================================================
module             what it holds
=================  ==========================================================================================
``replies``        a teacher's tagged reply -> a checked :class:`~rema.data.dialogues.Dialogue` or a rejection
                   reason (format, leaked answer, wrong boxed answer, ...); pure functions
``teacher``        one chat-completions request through the ``openai`` client, with counted retries and usage
``store``          the output files: append + fsync per row, resume, a torn last line from a kill cut off
``run``            the work: input rows, what is left to ask, concurrency, progress bar, summary
``command``        the ``rema distill`` command line (flags are shorthands for ``distill.*`` config keys)
=================  ==========================================================================================

The teacher prompts live with every other prompt in :mod:`rema.prompts` (``TEACHER_PROMPTS``, versioned).
The ``openai`` client is the optional extra ``pip install 'rema[distill]'``, imported only when a run starts.
"""

from .command import add_distill_command

__all__ = ["add_distill_command"]
