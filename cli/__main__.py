"""`python -m cli` runs the `dualnet` command line."""

from cli.main import main

main()
