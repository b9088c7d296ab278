"""`python -m cdlbench`: the command line (cdlbench/cli.py); Ctrl-C even during its import exits 130."""
try:
    from .cli import main
except KeyboardInterrupt:
    import os
    import sys

    sys.stderr.write("\ninterrupted\n")
    sys.stderr.flush()
    os._exit(130)

main()
