"""`python -m shoal` runs the command line."""

from shoal.cli import main

main()
