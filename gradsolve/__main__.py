"""`python -m gradsolve` runs the command line."""
from gradsolve.cli.main import main

main()
