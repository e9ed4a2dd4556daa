"""python -m lazytriton: the command line (lazytriton/cli.py)."""
import sys

from .cli import main

sys.exit(main())
