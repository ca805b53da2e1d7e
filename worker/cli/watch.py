"""``disburse status --watch``: a batch followed until every payout is settled.

On a terminal, a rich progress bar (settled of total, rate, time left) with the counts
per state and what holds the batch up; otherwise one plain line per interval, for logs
and pipes. A held batch is said once and not waited on (it moves only on ``disburse
approve``); a paused one is said on every update. A server that does not answer is
said ("reconnecting") and asked again at the next interval, so a blip of Redis or
PostgreSQL shows as a line, not an exit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import click
from rich.console import Console, RenderableType
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from worker.cli.common import pause_text
from worker.cli.unreachable import SERVER_ERRORS, server_error
from worker.core.states import State
from worker.core.text import plural
from worker.flows.report import counts_text
from worker.ledger import BatchSummary


@dataclass(frozen=True)
class Snapshot:
    summary: BatchSummary
    paused: dict[str, str] | None  # the pause switch that stops this batch's market
    unreachable: str | None = None  # why the pause switch could not be read


def _holdup(snapshot: Snapshot) -> str:
    """What keeps the batch from moving, said plainly; empty when nothing does."""
    if snapshot.paused:
        why = pause_text(snapshot.paused["account"], snapshot.paused["reason"])
        return f"PAUSED ({why}): `disburse resume` restarts submissions"
    if snapshot.unreachable:
        return f"pause switch unknown: {snapshot.unreachable}; reconnecting"
    return ""


def held_text(summary: BatchSummary) -> str:
    reason = f" ({summary.held_reason})" if summary.held_reason else ""
    return (
        f"batch {summary.batch_id} is HELD{reason}: "
        f"{plural(summary.counts.get(State.HELD, 0), 'payout')} wait for "
        f"`disburse approve {summary.batch_id}`"
    )


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


class _Rate:
    """Settled payouts per second since the first reading, and the time left at that pace."""

    def __init__(self) -> None:
        self.first: tuple[float, int] | None = None

    def update(self, settled: int, total: int) -> tuple[float | None, float | None]:
        now = time.monotonic()
        if self.first is None:
            self.first = (now, settled)
        elapsed, done = now - self.first[0], settled - self.first[1]
        if elapsed <= 0 or done <= 0:
            return None, None
        rate = done / elapsed
        return rate, (total - settled) / rate


def watch(
    read: Callable[[], Snapshot], *, interval: float, console: Console
) -> tuple[BatchSummary, float]:
    """Follow the batch until it is settled or held; its last summary and the seconds
    watched. Ctrl-C ends it (KeyboardInterrupt)."""
    started = time.monotonic()
    follow = _follow_terminal if console.is_terminal else _follow_lines
    summary = follow(read, interval, console)
    return summary, time.monotonic() - started


def _read_or_say(read: Callable[[], Snapshot], say: Callable[[str], None]) -> Snapshot | None:
    try:
        return read()
    except SERVER_ERRORS as exc:
        say(f"reconnecting: {server_error(exc)}")
        return None


def _done(snapshot: Snapshot) -> bool:
    summary = snapshot.summary
    return summary.settled or bool(summary.counts.get(State.HELD))


def _follow_lines(read: Callable[[], Snapshot], interval: float, console: Console) -> BatchSummary:
    rate = _Rate()
    last: BatchSummary | None = None
    while True:
        snapshot = _read_or_say(read, click.echo)
        if snapshot is not None:
            last = snapshot.summary
            per_second, left = rate.update(last.settled_count, last.total)
            share = 100 * last.settled_count / max(last.total, 1)
            pace = f"{per_second:.1f}/s, {_duration(left or 0)} left" if per_second else "-/s"
            line = f"{last.settled_count}/{last.total} settled ({share:.0f}%)  {pace}"
            line += f"  {counts_text(last)}"
            holdup = _holdup(snapshot)
            click.echo(f"{line}  {holdup}" if holdup else line)
            if _done(snapshot):
                return last
        time.sleep(interval)


class _BatchProgress(Progress):
    """The bar, then the counts per state and what holds the batch up, below it."""

    note = ""

    def get_renderables(self) -> Iterable[RenderableType]:
        yield self.make_tasks_table(self.tasks)
        if self.note:
            yield Text(self.note)


def _follow_terminal(
    read: Callable[[], Snapshot], interval: float, console: Console
) -> BatchSummary:
    progress = _BatchProgress(
        TextColumn("[bold]settled"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]}"),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        refresh_per_second=4,
    )
    rate = _Rate()
    with progress:
        task = progress.add_task("settled", total=None, rate="")
        while True:
            snapshot = _read_or_say(read, progress.console.print)
            if snapshot is not None:
                last = snapshot.summary
                per_second, _ = rate.update(last.settled_count, last.total)
                progress.update(
                    task,
                    completed=last.settled_count,
                    total=last.total,
                    rate=f"{per_second:.1f} payouts/s" if per_second else "",
                )
                holdup = _holdup(snapshot)
                progress.note = "\n".join(filter(None, [counts_text(last), holdup]))
                if _done(snapshot):
                    progress.refresh()
                    return last
            time.sleep(interval)
