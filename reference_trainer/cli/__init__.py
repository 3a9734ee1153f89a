"""The ``syn2co-train`` command line: thin commands that parse, build a config, call one function.

``run``'s options are generated from :class:`reference_trainer.config.TrainConfig`, so the CLI
and the config files always accept the same names. Errors a user can fix (bad options, missing
data, unreadable checkpoints, a diverging loss) end the command with one line and a non-zero
exit code, never a traceback.

One module per group of commands: :mod:`~reference_trainer.cli.run` (``run``),
:mod:`~reference_trainer.cli.eval` (``eval knn``, ``eval linear``) and
:mod:`~reference_trainer.cli.tools` (``recipes``, ``export``, ``plot``, ``synth``, ``demo``).
This module assembles them into :data:`app` in the order ``--help`` lists them.
"""

from __future__ import annotations

import typer

from ..errors import ConfigError, one_line
from ._consoles import console
from ._error_boundary import OneLineUsageErrors
from .compare import compare_cmd
from .eval import eval_knn, eval_linear, probe_backbone
from .run import HELP as RUN_HELP
from .run import run_command, set_run_options
from .tools import demo_cmd, export_cmd, plot_cmd, recipes_app, synth_cmd

__all__ = ["app", "eval_app", "main", "probe_backbone"]

app = typer.Typer(
    name="syn2co-train",
    cls=OneLineUsageErrors,
    help="Self-supervised pretraining of vision transformers with synthetic negatives and images.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
eval_app = typer.Typer(
    help="Evaluate a pretrained backbone: weighted kNN or a linear probe.", no_args_is_help=True
)
app.add_typer(eval_app, name="eval")
app.command("run", help=RUN_HELP)(run_command)
app.add_typer(recipes_app, name="recipes")
eval_app.command("knn")(eval_knn)
eval_app.command("linear")(eval_linear)
app.command("export")(export_cmd)
app.command("plot")(plot_cmd)
app.command("compare")(compare_cmd)
app.command("synth")(synth_cmd)
app.command("demo")(demo_cmd)


def main() -> None:
    """Entry point of the ``syn2co-train`` script: load the installed plug-ins
    (:mod:`reference_trainer.plugins`), then run the command."""
    from ..plugins import load_plugins

    try:
        if load_plugins():
            set_run_options()
    except ConfigError as e:
        console.print(f"[red]error:[/] {one_line(e)}", soft_wrap=True)
        raise SystemExit(1) from None
    app()
