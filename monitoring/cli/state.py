"""`monitoring state ...`: a stream agent's changelog state.

monitoring state rebuild aggregation                 # restore each partition as a worker would
monitoring state rebuild aggregation --from-source --from 2h [--to T] [--dry-run]
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from monitoring.cli.settings import load_settings, require_kafka_access

if TYPE_CHECKING:
    from monitoring.ops.rebuild import PartitionReport

app = typer.Typer(help="Stream agents' state: check it, rebuild it.", no_args_is_help=True)
console = Console(stderr=True)


@app.command()
def rebuild(
    agent: Annotated[
        str,
        typer.Argument(help="aggregation, anomaly, logs, model_metrics; alerting or notifier"),
    ],
    from_source: Annotated[
        bool, typer.Option("--from-source", help="Replay the source topics (stop workers first).")
    ] = False,
    from_: Annotated[
        str | None,
        typer.Option("--from", help="Replay from: ISO 8601, epoch ms, a duration ago (2h)."),
    ] = None,
    to: Annotated[
        str | None,
        typer.Option("--to", help="Replay to (default: the worker group's committed offsets)."),
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="Replay and report; write nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
    config: Annotated[str | None, typer.Option("--config", "-c", help="Settings file.")] = None,
) -> None:
    """Without --from-source: restore every partition of the agent's changelog as a
    worker would, and report (a running worker rebuilds from it whenever it is given
    a partition: restart one to make it). With --from-source: rebuild the changelog
    from the source topics' records since --from (see docs/operations.md)."""
    from monitoring.log import configure_logging
    from monitoring.ops.backfill import parse_time
    from monitoring.ops.duty_state import DUTIES, check_duty_state
    from monitoring.ops.rebuild import RebuildError, check_changelog, rebuild_from_source

    settings = load_settings(config)
    configure_logging("WARNING")
    require_kafka_access(settings)
    try:
        if agent in DUTIES:  # one partition each, fenced by the duty's lease
            if from_source or from_ or to or dry_run:
                raise RebuildError(
                    f"{agent}: no --from-source; a fresh {agent} rebuilds its state from "
                    "its topics by itself (docs/operations.md, State rebuild)"
                )
            reports = [check_duty_state(settings, agent)]
            _print_reports(reports, as_json)
            if not all(r.readable for r in reports):
                raise typer.Exit(1)
            return
        if not from_source:
            if from_ or to or dry_run:
                raise RebuildError("--from, --to and --dry-run go with --from-source")
            reports = check_changelog(settings, agent)
            _print_reports(reports, as_json)
            if not all(r.readable for r in reports):
                raise typer.Exit(1)
            return
        if from_ is None:
            raise RebuildError("--from-source needs --from")
        try:
            from_ms = parse_time(from_)
            to_ms = parse_time(to) if to else None
        except ValueError as e:
            raise RebuildError(str(e)) from None
        result = rebuild_from_source(settings, agent, from_ms, to_ms, dry_run=dry_run)
    except RebuildError as e:
        console.print(f"[red]{e}[/]")
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(result.as_dict()))
        return
    for name, (start, end) in result.ranges.items():
        typer.echo(f"{name}  offsets {start}-{end}  ({end - start} replayed)")
    verb = "written" if result.written else "not written (--dry-run)"
    typer.echo(
        f"messages={result.messages} keys={sum(result.keys.values())} "
        f"tombstoned={sum(result.tombstoned.values())} outputs_discarded="
        f"{sum(result.discarded_outputs.values())}; state {verb}"
    )
    if result.rewound:
        typer.echo(f"worker group offsets moved back: {result.rewound}")


def _print_reports(reports: list[PartitionReport], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps([r.as_dict() for r in reports]))
        return
    for r in reports:
        state = "OK  " if r.readable else "FAIL"
        detail = r.error or ", ".join(f"{k}={v}" for k, v in r.summary.items())
        typer.echo(
            f"{state} partition {r.partition}: {r.records} records, {r.keys} keys; "
            f"committed {r.committed or '-'}; {detail}"
        )
