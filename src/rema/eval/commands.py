"""CLI commands of the evaluation package: ``rema eval``, ``rema compare``, ``rema report``."""


def add_eval_commands(sub) -> None:
    """Register the evaluation subcommands on the ``rema`` argparse subparsers."""
