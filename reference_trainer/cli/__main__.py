"""``python -m reference_trainer.cli`` (and ``torchrun -m reference_trainer.cli``): the
``syn2co-train`` command."""

from __future__ import annotations

from . import main

if __name__ == "__main__":  # not when a tool imports every module
    main()
