"""`monitoring dlq list|show|replay`: read and replay the dead-letter topic.

    monitoring dlq list --since 1h                 # by reason and source topic
    monitoring dlq show 120-130 --limit 5          # records decoded as far as they go
    monitoring dlq replay --reason unknown-fingerprint --dry-run
    monitoring dlq replay 120-130                  # to their original topics, once

A selection is offsets of the dead-letter topic (``12``, ``10-20``, ``0:10-20``),
comma-separated. Every read is bounded (``--max-records``, ``--max-bytes``,
``--timeout``); replays are idempotent (docs/operations.md).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from monitoring.cli.doctor import finite_seconds
from monitoring.cli.settings import load_settings, require_kafka_access
from monitoring.config import Settings, ms, parse_duration

app = typer.Typer(help="Dead letters: list, show, replay.", no_args_is_help=True)
console = Console(soft_wrap=True)


@app.callback()
def _main(log_level: Annotated[str, typer.Option(help="Log level (stderr).")] = "WARNING") -> None:
    from monitoring.log import configure_logging

    configure_logging(log_level.upper())


ConfigOpt = Annotated[
    str | None, typer.Option("--config", "-c", help="Settings file (default monitoring.yaml).")
]
SinceOpt = Annotated[
    str | None, typer.Option("--since", help="Only dead letters newer than this (1h, 30m, 2d).")
]
ReasonOpt = Annotated[list[str] | None, typer.Option("--reason", "-r", help="Only this reason.")]
TopicOpt = Annotated[
    list[str] | None,
    typer.Option("--topic", "-t", help="Only from this source topic (with or without prefix)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="JSON for scripts.")]
MaxRecordsOpt = Annotated[int, typer.Option(help="Read at most this many dead letters.", min=1)]
MaxBytesOpt = Annotated[int, typer.Option(help="Read at most this many bytes.", min=1)]
TimeoutOpt = Annotated[
    float,
    typer.Option(
        help="Give up reading after these seconds.", min=0.1, max=3600, callback=finite_seconds
    ),
]
SelectionArg = Annotated[
    str | None, typer.Argument(help="Offsets: 12, 10-20, 0:10-20, comma-separated.")
]


def _fail(message: str, code: int = 1) -> typer.Exit:
    text = Text("error: ", style="red")
    text.append(message)  # may quote broker data: never read as markup
    console.print(text, highlight=False)
    return typer.Exit(code)


def _filter(
    settings: Settings,
    selection: str | None,
    since: str | None,
    reasons: list[str] | None,
    topics: list[str] | None,
) -> Any:
    from monitoring.ops.deadletters import Filter, Selection, SelectionError

    try:
        sel = Selection.parse(selection)
    except SelectionError as e:
        raise _fail(f"selection: {e}", 2) from None
    since_ms = None
    if since:
        try:
            since_ms = int(time.time() * 1000) - ms(parse_duration(since))
        except ValueError as e:
            raise _fail(f"--since: {e}", 2) from None
    return Filter(
        selection=sel,
        reasons=frozenset(reasons or ()),
        topics=frozenset(topics or ()),
        since_ms=since_ms,
        prefix=settings.kafka.topic_prefix,
    )


def _scan(
    settings: Settings,
    flt: Any,
    max_records: int,
    max_bytes: int,
    timeout: float,
    max_matches: int | None = None,
) -> Any:
    from monitoring.ops.dlq_kafka import DlqError, ScanLimits, scan

    try:
        return scan(settings, flt, ScanLimits(max_records, max_bytes, timeout), max_matches)
    except DlqError as e:
        raise _fail(str(e)) from None
    except Exception as e:  # librdkafka: broker down, timeouts
        where = settings.kafka.bootstrap_servers
        raise _fail(f"reading the dead-letter topic on {where}: {e}") from None


def _row(table: Table, name: str, value: str) -> None:
    """A name/value row; the value (broker data) as text, never markup."""
    table.add_row(Text(name), Text(value))


def _when(t_ms: int) -> str:
    return datetime.fromtimestamp(t_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _stopped_note(result: Any) -> None:
    if result.stopped:
        console.print(
            f"[yellow]partial:[/] {result.stopped} after {result.read} records; narrow with "
            "--since or a selection, or raise the bound"
        )


@app.command("list")
def list_(
    since: SinceOpt = "1h",
    reason: ReasonOpt = None,
    topic: TopicOpt = None,
    bucket: Annotated[
        str | None, typer.Option("--bucket", help="Also group by time: 1h, 10m, 1d buckets.")
    ] = None,
    as_json: JsonOpt = False,
    max_records: MaxRecordsOpt = 100_000,
    max_bytes: MaxBytesOpt = 256 << 20,
    timeout: TimeoutOpt = 30.0,
    config: ConfigOpt = None,
) -> None:
    """Dead letters grouped by reason and source topic: counts, first and last seen."""
    from monitoring.ops.deadletters import group

    settings = load_settings(config)
    flt = _filter(settings, None, since, reason, topic)
    bucket_ms = None
    if bucket:
        try:
            bucket_ms = ms(parse_duration(bucket))
        except ValueError as e:
            raise _fail(f"--bucket: {e}", 2) from None
    require_kafka_access(settings, min(timeout, 10.0))  # after the arguments: exit 2 at once
    result = _scan(settings, flt, max_records, max_bytes, timeout)
    groups = group(result.letters, bucket_ms=bucket_ms)
    if as_json:
        doc = {
            "groups": [g.as_dict() for g in groups],
            "total": len(result.letters),
            "read": result.read,
            "partial": result.stopped,
        }
        typer.echo(json.dumps(doc, indent=2))
        return
    table = Table(title=f"dead letters on {settings.kafka.topic_prefix}dead-letter")
    cols = ["reason", "source topic", "count", "first seen", "last seen", "offsets", "replay"]
    for col in (["bucket"] if bucket_ms else []) + cols:
        table.add_column(col, justify="right" if col == "count" else "left")
    for g in groups:
        row = [
            g.reason, g.source_topic, str(g.count), _when(g.first_ms), _when(g.last_ms),
            f"{g.first_offset}-{g.last_offset}", "yes" if g.replayable else "no (permanent)",
        ]  # fmt: skip
        if bucket_ms:
            row.insert(0, _when(g.bucket_ms or 0))
        table.add_row(*(Text(c) for c in row))  # broker data: text, never markup
    console.print(table, highlight=False)
    console.print(f"{len(result.letters)} dead letters in {len(groups)} groups")
    _stopped_note(result)


@app.command()
def show(
    selection: SelectionArg = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="Show at most N.", min=1)] = 20,
    since: SinceOpt = None,
    reason: ReasonOpt = None,
    topic: TopicOpt = None,
    as_json: JsonOpt = False,
    max_records: MaxRecordsOpt = 100_000,
    max_bytes: MaxBytesOpt = 256 << 20,
    timeout: TimeoutOpt = 30.0,
    config: ConfigOpt = None,
) -> None:
    """Each dead letter with its headers and reason, decoded as far as it goes."""
    from monitoring.ops.deadletters import decode_as_far, preview
    from monitoring.wire.codec import AvroCodec

    settings = load_settings(config)
    flt = _filter(settings, selection, since, reason, topic)
    require_kafka_access(settings, min(timeout, 10.0))
    result = _scan(settings, flt, max_records, max_bytes, timeout, max_matches=limit)
    codec = AvroCodec.from_directory()
    shown = result.letters[:limit]
    docs = []
    for d in shown:
        dec = decode_as_far(codec, d.value, d.truncated_from)
        docs.append((d, dec))
    if as_json:
        out = []
        for d, dec in docs:
            khex, ktext = preview(d.key or b"")
            out.append({
                "partition": d.partition, "offset": d.offset, "timestamp_ms": d.timestamp_ms,
                "reason": d.reason, "error": d.error, "stage": d.stage,
                "source": {"topic": d.source_topic, "partition": d.source_partition,
                           "offset": d.source_offset},
                "key": ktext, "key_hex": khex, "headers": dict(d.headers),
                "decoding": dec.as_dict(),
            })  # fmt: skip
        doc = {"records": out, "matched": len(result.letters), "partial": result.stopped}
        typer.echo(json.dumps(doc, indent=2))
        return
    for d, dec in docs:
        console.rule(Text(f"{d.coordinates}  {_when(d.timestamp_ms)}  {d.reason}"), style="dim")
        t = Table(show_header=False, box=None)
        _row(t, "reason", d.reason)
        _row(t, "error", d.error[:500])
        _row(t, "stage", d.stage)
        _row(t, "source", f"{d.source_topic} [{d.source_partition}] @{d.source_offset}")
        _row(t, "key", preview(d.key or b"")[1])
        for name, value in d.headers:
            if name not in ("x-reason", "x-error", "x-stage") and not name.startswith("x-source"):
                _row(t, name[:40], value[:200])
        _row(t, "decoding", dec.status + (f": {dec.detail}" if dec.detail else ""))
        if dec.schema:
            _row(t, "schema", f"{dec.schema} v{dec.version} (fingerprint {dec.fingerprint})")
        elif dec.fingerprint:
            _row(t, "fingerprint", dec.fingerprint)
        if dec.record:
            _row(t, "record", dec.record)
        _row(t, "bytes", f"{dec.size}: {dec.hex}")
        _row(t, "text", dec.text)
        console.print(t, highlight=False, markup=False)
    console.print(f"{len(shown)} matching dead letters shown (--limit {limit})")
    _stopped_note(result)


@app.command()
def replay(
    selection: SelectionArg = None,
    to_topic: Annotated[
        str | None,
        typer.Option(
            "--to-topic",
            help="Replay there instead of the original topic (an input topic of this "
            "deployment, with or without the prefix).",
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would happen.")] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Replay permanent reasons and partial batches too.")
    ] = False,
    again: Annotated[
        bool, typer.Option("--again", help="Replay ones the ledger says were replayed.")
    ] = False,
    all_: Annotated[
        bool, typer.Option("--all", help="Without a selection or filter: replay everything.")
    ] = False,
    since: SinceOpt = None,
    reason: ReasonOpt = None,
    topic: TopicOpt = None,
    as_json: JsonOpt = False,
    max_records: MaxRecordsOpt = 100_000,
    max_bytes: MaxBytesOpt = 256 << 20,
    timeout: TimeoutOpt = 30.0,
    config: ConfigOpt = None,
) -> None:
    """Replay the selected dead letters to their original topic (key and partition kept),
    once: a second run skips what the ledger holds. Exit 1 if any replay failed."""
    from monitoring.ops.dlq_kafka import DlqError, iter_actions
    from monitoring.ops.dlq_kafka import replay as do_replay

    settings = load_settings(config)
    if not (selection or since or reason or topic or all_):
        raise _fail("name what to replay: a selection, --reason, --topic, --since or --all", 2)
    flt = _filter(settings, selection, since, reason, topic)
    require_kafka_access(settings, min(timeout, 10.0))
    result = _scan(settings, flt, max_records, max_bytes, timeout)
    if result.stopped:
        raise _fail(f"the scan was not complete ({result.stopped}): narrow the selection")
    try:
        items = do_replay(
            settings, result.letters, to_topic, dry_run, force, again, timeout_s=timeout
        )
    except DlqError as e:
        raise _fail(str(e)) from None
    except Exception as e:
        raise _fail(f"replay on {settings.kafka.bootstrap_servers}: {e}") from None
    summary = dict(iter_actions(items))
    if as_json:
        doc = {"summary": summary, "items": [i.as_dict() for i in items], "dry_run": dry_run}
        typer.echo(json.dumps(doc, indent=2))
    else:
        for i in items:
            where = f" -> {i.target}" if i.target else ""
            if i.offset is not None:
                where += f" [{i.partition}] @{i.offset}"
            why = f": {i.why}" if i.why else ""
            line = f"{i.letter.coordinates:>10} {i.letter.reason:<20} {i.action}{where}{why}"
            console.print(Text(line), highlight=False)
        text = ", ".join(f"{n} {a}" for a, n in summary.items()) or "nothing selected"
        console.print(("dry run: " if dry_run else "") + text, highlight=False)
    if "failed" in summary:
        raise typer.Exit(1)
