"""``monitoring bench codecs``: every hand codec is measured, and agrees with fastavro."""

from __future__ import annotations

from typer.testing import CliRunner

from monitoring.bench.codecs import cases, run, summary_line
from monitoring.cli.bench import app


def test_every_hand_codec_agrees_with_fastavro() -> None:
    rows = run(number=50, repeat=1)
    assert [r.name for r in rows] == [c.name for c in cases()]
    assert {r.name.split()[0] for r in rows} == {
        "MetricSample", "MetricBatch", "Aggregate", "LogRecord", "StoredLog", "LogBatch",
        "StoredLogBatch",
    }  # fmt: skip
    assert all(r.agree for r in rows), [r.name for r in rows if not r.agree]
    assert all(r.hand_us > 0 and r.fastavro_us > 0 for r in rows)
    assert summary_line(rows).count("_us=") == len(rows)


def test_the_command_prints_a_row_per_codec() -> None:
    res = CliRunner().invoke(app, ["codecs", "--number", "20", "--repeat", "1"])
    assert res.exit_code == 0, res.output
    assert "aggregate_decode_us=" in res.output.splitlines()[-1]
