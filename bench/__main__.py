"""``python -m bench [--quick] [--json PATH] [--payouts N] [case ...]``: benchmarks, baselines.

Every case starts its own private Redis, sandbox provider and worker processes
(``worker.dev.cluster.LocalCluster``), runs ours and the baseline side by side in the
same run, and stops everything again. One table of all results is printed at the
end; progress goes to stderr. ``--quick`` shrinks every size for a smoke run (its
numbers are not comparable with the targets, which are set for the full sizes).
"""

from __future__ import annotations

import argparse
import importlib
import json
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import FrameType, ModuleType

from bench.common import Context, Result, say, table

# In the order they run: the short, Redis-only cases first.
CASES = ("cli_start", "accept", "ledger", "latency", "throughput", "ratelimit", "memory")
# Cases other modules may provide: run when present and shaped like the others.
OPTIONAL = ("reconcile", "console")
# Run only when named: the million-payout soak takes hours, the slow provider ~10 minutes.
OPT_IN = ("soak", "slow_provider")


def _load(name: str) -> ModuleType | None:
    try:
        module = importlib.import_module(f"bench.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"bench.{name}":
            return None
        raise
    return module if callable(getattr(module, "run", None)) else None


def _run_case(name: str, run: Callable[[Context], list[Result]], ctx: Context) -> list[Result]:
    started = time.monotonic()
    say(f"=== {name} ===")
    try:
        results = run(ctx)
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        results = [Result(case=name, ours=f"ERROR: {type(exc).__name__}: {exc}"[:120])]
    say(f"=== {name}: {time.monotonic() - started:.0f} s ===")
    return results


def _counts(text: str) -> tuple[int, ...]:
    """``1,2,4`` -> (1, 2, 4): positive whole numbers."""
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 1,2: {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive numbers like 1,2: {text!r}")
    return values


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # so every case's clean-up stops the processes it started


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _terminate)
    available = [name for name in OPTIONAL if _load(name) is not None]
    opt_in = [name for name in OPT_IN if _load(name) is not None]
    choices = [*CASES, *available, *opt_in]
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("cases", nargs="*", metavar="case", help=f"any of: {', '.join(choices)}")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--json", type=Path, help="also write every result (and raw numbers) here")
    parser.add_argument(
        "--payouts",
        type=int,
        help="payouts of the soak (default 1,000,000) and of slow_provider (default 5,000)",
    )
    parser.add_argument(
        "--processes",
        type=_counts,
        help="slow_provider: worker process counts to try at 400/s, e.g. 1,2 (the default)",
    )
    parser.add_argument(
        "--concurrency",
        type=_counts,
        help="slow_provider: SUBMIT_CONCURRENCY values to try at 400/s (default: unset)",
    )
    args = parser.parse_args(argv)
    unknown = [name for name in args.cases if name not in choices]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(choices)}")
    selected = tuple(args.cases) or tuple(n for n in choices if n not in opt_in)
    ctx = Context(
        quick=args.quick,
        selected=selected,
        payouts=args.payouts,
        processes=args.processes,
        concurrency=args.concurrency,
    )

    results: list[Result] = []
    common: list[Result] = []
    own_tables: list[str] = []
    for name in selected:
        module = _load(name)
        assert module is not None
        found = _run_case(name, module.run, ctx)
        results += found
        # A case with columns of its own (render) prints its own table.
        render = getattr(module, "render", None)
        errors = [r for r in found if r.ours.startswith("ERROR")]
        if render is None or errors:
            common += found
        else:
            own_tables.append(render(found))

    print("\n\n".join([*([table(common)] if common else []), *own_tables]))
    if args.json:
        args.json.write_text(
            json.dumps({"quick": args.quick, "results": [r.as_dict() for r in results]}, indent=2)
            + "\n"
        )
    # A missed target is a result; only a case that could not run fails the command.
    return 1 if any(r.ours.startswith("ERROR") for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
