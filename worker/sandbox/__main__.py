"""``python -m worker.sandbox``: the provider simulator in the foreground."""

from worker.sandbox.cli import main

raise SystemExit(main())
