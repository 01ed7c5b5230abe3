"""``python -m ctseg`` runs the command-line interface (also what ``torchrun -m ctseg`` starts)."""

from ctseg.cli.main import main

main()
