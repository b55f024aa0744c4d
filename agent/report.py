"""Output of the agent: progress lines, the summary table, the report and JUnit XML."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TextIO

import msgspec

from agent.cloud import ReportBody
from agent.ledger import RunReport, WriteRecord

__all__ = [
    "progress_line",
    "report_body",
    "summary_line",
    "summary_table",
    "write_junit",
]

_encoder = msgspec.json.Encoder()


def progress_line(record: WriteRecord, writes: int) -> str:
    width = len(str(writes))
    trail = ", ".join(str(a.status) if a.status is not None else a.outcome for a in record.attempts)
    attempts = len(record.attempts)
    noun = "attempt" if attempts == 1 else "attempts"
    return (
        f"  [{record.index:>{width}}/{writes}] {record.marker}  "
        f"{record.client_outcome:<12} {attempts} {noun} ({trail})"
    )


def summary_line(report: RunReport) -> str:
    counts = report.tally
    return (
        f"{report.scenario} on {report.target.method} {report.target.url}: "
        f"{counts.writes} writes, {counts.acknowledged} acknowledged, {counts.lost} lost, "
        f"{counts.duplicated} duplicated, {counts.unknown} unknown; "
        f"score {report.score.score} ({report.score.grade})"
    )


def report_body(report: RunReport) -> ReportBody:
    """Build the cloud report: the summary line and the whole ledger as raw JSON."""
    return ReportBody(
        summary=summary_line(report)[:2000], raw_json=msgspec.Raw(_encoder.encode(report))
    )


def summary_table(report: RunReport, out: TextIO) -> None:
    counts = report.tally
    score = report.score
    columns = [
        ("writes", str(counts.writes)),
        ("acknowledged", str(counts.acknowledged)),
        ("lost", str(counts.lost)),
        ("duplicated", str(counts.duplicated)),
        ("unknown", str(counts.unknown)),
        ("score", str(score.score)),
        ("grade", score.grade),
        ("flags", ", ".join(score.flags) or "none"),
    ]
    widths = [max(len(name), len(value)) for name, value in columns]
    header = "  ".join(name.ljust(w) for (name, _), w in zip(columns, widths, strict=True))
    values = "  ".join(value.ljust(w) for (_, value), w in zip(columns, widths, strict=True))
    out.write(header.rstrip() + "\n" + values.rstrip() + "\n")
    origin = "settled in the cloud" if score.source == "cloud" else "computed locally"
    if score.source == "cloud" and not score.settled:
        origin = "from the cloud, not settled yet"
    out.write(f"score {origin}; {counts.attempts} attempts")
    if counts.extra_copies:
        out.write(f", {counts.extra_copies} extra copies stored")
    if counts.rejected:
        out.write(f", {counts.rejected} writes rejected by the target")
    out.write("\n")


def _write_case(suite: ET.Element, record: WriteRecord) -> bool:
    case = ET.SubElement(suite, "testcase", classname="writes", name=record.marker)
    detail = (
        f"client outcome {record.client_outcome}, {len(record.attempts)} attempts, "
        f"{record.copies} copies stored"
    )
    if record.verdict in ("lost", "duplicated"):
        failure = ET.SubElement(case, "failure", message=f"{record.verdict}: {detail}")
        failure.set("type", record.verdict)
        failure.text = ", ".join(f"{a.number}:{a.fault}->{a.outcome}" for a in record.attempts)
        return True
    ET.SubElement(case, "system-out").text = detail
    return False


def write_junit(path: Path, report: RunReport, fail_under: int) -> None:
    """Write one test case per logical write, and one for the score threshold."""
    suite = ET.Element("testsuite", name=f"softadastra-agent.{report.scenario}")
    failures = sum(_write_case(suite, record) for record in report.writes)
    case = ET.SubElement(suite, "testcase", classname="score", name=f"score >= {fail_under}")
    if report.score.score < fail_under:
        failures += 1
        failure = ET.SubElement(
            case, "failure", message=f"score {report.score.score} is below {fail_under}"
        )
        failure.text = summary_line(report)
    if report.verification_error:
        failures += 1
        error = ET.SubElement(
            ET.SubElement(suite, "testcase", classname="verify", name="read back"),
            "failure",
            message=report.verification_error,
        )
        error.text = report.verification_error
    suite.set("tests", str(len(report.writes) + 1 + (1 if report.verification_error else 0)))
    suite.set("failures", str(failures))
    suite.set("errors", "0")
    suite.set("timestamp", report.started_at)
    suites = ET.Element("testsuites")
    suites.append(suite)
    ET.indent(suites)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(suites).write(path, encoding="utf-8", xml_declaration=True)
