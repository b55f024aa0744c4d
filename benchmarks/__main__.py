"""Run the benchmark suite: `uv run python -m benchmarks [--quick] [--write-results]`.

It starts embedded PostgreSQL and Redis under a temporary directory, applies the
migrations and starts the service processes each measurement needs. It prints
progress lines and a table per measurement. Everything it started is stopped on
exit, on an error and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import signal
import sys
from collections.abc import Sequence
from types import ModuleType

from benchmarks import (
    bench_end_to_end,
    bench_ingest,
    bench_memory,
    bench_naive,
    bench_persist,
    bench_score_reads,
    fixtures,
)
from benchmarks.harness import REPO_ROOT, Backends
from benchmarks.machine import describe_machine, load_average
from benchmarks.report import NOISE_WARNING, render_results, render_tables
from benchmarks.session import Plan, Session, progress
from benchmarks.stats import Figure
from benchmarks.targets import check_targets, render_targets

MEASUREMENTS: dict[str, ModuleType] = {
    "ingest": bench_ingest,
    "persist": bench_persist,
    "e2e": bench_end_to_end,
    "naive": bench_naive,
    "scores": bench_score_reads,
    "memory": bench_memory,
}
RESULTS_PATH = REPO_ROOT / "benchmarks" / "RESULTS.md"
METHOD = """\
- Load: a load generator in the benchmark process plays one agent per run, each on its own
  keep-alive connection to 127.0.0.1 with at most one request in flight. *Closed loop*: each
  agent sends its next batch when the previous one gets its response, so the rate is the most the
  server accepts. *Paced*: batches go out on a fixed schedule adding up to a target rate.
- Every loop is bounded in time and in events. Processes are started fresh for each
  repetition where their memory is reported.
- Ingest, api and worker are the real `softadastra-cloud ingest`, `api` and `worker`
  commands with the default configuration (access log on, 4 stream shards), against
  embedded PostgreSQL and Redis started by the benchmark."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="CI smoke run of under about a minute: checks that every figure is produced",
    )
    parser.add_argument(
        "--write-results",
        action="store_true",
        help=f"write the figures, the command and the machine to {RESULTS_PATH.name}",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(MEASUREMENTS),
        help="run only this measurement (repeatable); later ones reuse earlier figures "
        "they depend on, so `e2e` also runs before `scores` and `memory`",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary directory with service logs"
    )
    return parser


async def _run_measurements(
    backends: Backends, plan: Plan, selected: Sequence[str]
) -> tuple[list[Figure], list[tuple[str, str]]]:
    api = await backends.start_http_service("api")
    control_ingest = await backends.start_http_service("ingest")
    redis = backends.redis_client()
    conn = await backends.connect()
    try:
        machine = await describe_machine(conn, redis, backends.code_version)
        for name, value in machine:
            progress("machine: %s: %s", name, value)
        account = await fixtures.create_account(api.url, agents=plan.agents)
        session = Session(plan, backends, api, control_ingest, account, redis, conn)
        figures: list[Figure] = []
        for name in selected:
            module = MEASUREMENTS[name]
            progress("== %s", module.SECTION)
            figures.extend(await module.run(session))
            print(render_tables([f for f in figures if f.section == module.SECTION], {}))
        return figures, machine
    finally:
        await conn.close()
        await redis.aclose()


def _selected(only: list[str] | None) -> list[str]:
    if not only:
        return list(MEASUREMENTS)
    wanted = set(only)
    # Score reads and memory pace their load at a share of the end-to-end rate.
    if wanted & {"scores", "memory", "naive"}:
        wanted.add("e2e")
    return [name for name in MEASUREMENTS if name in wanted]


def _interrupt(signum: int, frame: object) -> None:
    """Turn SIGINT or SIGTERM into KeyboardInterrupt once; later signals are ignored.

    asyncio's own SIGINT handler only cancels the main task, and a library that
    absorbs that cancellation would let the run go on, so the benchmark raises
    instead. Ignoring repeats keeps a second Ctrl-C (or the one `uv run` forwards)
    from cutting the clean-up short.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def _run_async(coroutine):  # type: ignore[no-untyped-def]
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    plan = Plan.for_mode(args.quick)
    selected = _selected(args.only)
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    progress("benchmark plan: %s", plan.describe())
    progress(NOISE_WARNING)
    load_before = load_average()
    backends = Backends(keep_dir=args.keep)
    try:
        backends.start()
        backends.migrate()
        progress("embedded PostgreSQL and Redis ready in %s", backends.directory)
        figures, machine = _run_async(_run_measurements(backends, plan, selected))
    except KeyboardInterrupt:
        progress("interrupted; stopping every process started")
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        backends.stop()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    notes = {module.SECTION: module.NOTES for module in MEASUREMENTS.values()}
    tables = render_tables(figures, notes)
    print()
    print(tables)
    print("\n".join(["### Targets", "", *render_targets(check_targets(figures))]))
    if args.write_results:
        command = "uv run python -m benchmarks" + "".join(
            f" {arg}" for arg in (argv if argv is not None else sys.argv[1:])
        )
        page = render_results(
            command=command,
            plan_text=plan.describe(),
            machine=machine,
            load_before=load_before,
            load_after=load_average(),
            figures=figures,
            notes=notes,
            method=METHOD,
        )
        RESULTS_PATH.write_text(page + "\n", encoding="utf-8")
        progress("wrote %s", RESULTS_PATH)
    return _check_produced(figures, selected)


def _check_produced(figures: Sequence[Figure], selected: Sequence[str]) -> int:
    """Return 1 when a measurement produced no figure or a figure that is not a number.

    This is what the CI smoke run checks: that every figure is produced, not its size.
    """
    problems = [
        f"{figure.section}: {figure.name} is {figure.stat.median}"
        for figure in figures
        if not math.isfinite(figure.stat.median) or figure.stat.median < 0
    ]
    produced = {figure.section for figure in figures}
    problems += [
        f"{MEASUREMENTS[name].SECTION}: no figures"
        for name in selected
        if MEASUREMENTS[name].SECTION not in produced
    ]
    for problem in problems:
        progress("missing figure: %s", problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
