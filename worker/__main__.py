import sys

from worker.cli import run

sys.exit(run())
