"""`softadastra-agent`: the command line of the agent.

Exit codes: 0 when the run's score is at least `--fail-under`, 1 when it is below,
when the target cannot be read or the cloud rejects the agent, 2 on usage errors.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from agent import __version__
from agent.client import MARKER_PLACEHOLDER, RetryPolicy, WriteTarget
from agent.cloud import CloudClient, CloudError, CloudUnavailable
from agent.runner import RunConfig, run_agent, write_outputs
from agent.scenarios import SCENARIOS
from agent.spool import upload_spool

__all__ = ["main"]

log = logging.getLogger(__name__)

# A run with no data loss, duplicate or failed recovery loses at most 10 points for
# timeouts and 15 for warnings. So 75 (grade B) passes every such run in every
# scenario, and fails any run with one of those findings.
DEFAULT_FAIL_UNDER = 75
METHODS = ("POST", "PUT", "PATCH")


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    return value


def _bounded_int(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {text}")
        return value

    parse.__name__ = "integer"
    return parse


def _add_verbosity(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument(
        "-v", "--verbose", action="count", default=default, help="log more (-vv for debug)"
    )


def _add_cloud_options(parser: argparse.ArgumentParser) -> None:
    # Subcommands accept -v too; SUPPRESS keeps them from resetting a -v given before.
    _add_verbosity(parser, argparse.SUPPRESS)
    parser.add_argument(
        "--cloud-url",
        default=os.environ.get("SOFTADASTRA_CLOUD_URL"),
        help="Softadastra Cloud base URL (default: $SOFTADASTRA_CLOUD_URL; without one, "
        "the run is only spooled)",
    )
    parser.add_argument(
        "--agent-key",
        default=os.environ.get("SOFTADASTRA_AGENT_KEY"),
        help="agent key sent as X-Agent-Key (default: $SOFTADASTRA_AGENT_KEY)",
    )
    parser.add_argument(
        "--score-timeout",
        type=_positive,
        default=30.0,
        help="seconds to wait for the cloud to settle the score (default: 30)",
    )


def _add_run_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    run = commands.add_parser(
        "run",
        help="run a failure scenario against an HTTP API",
        description="Write through a fault-injecting proxy, read the target back, "
        "report to the cloud and print the score. Only http:// targets can be proxied.",
    )
    run.add_argument("--target", required=True, help="http:// URL that receives the writes")
    run.add_argument("--method", default="POST", type=str.upper, choices=METHODS)
    run.add_argument(
        "--body",
        required=True,
        help=f"body template; {MARKER_PLACEHOLDER} is replaced by each write's unique marker",
    )
    run.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="request header for the target, such as its credentials; repeatable",
    )
    run.add_argument(
        "--idempotency-header",
        metavar="NAME",
        help="send a stable idempotency key per logical write in this header",
    )
    run.add_argument(
        "--verify-url", help="URL whose GET lists the stored items (default: --target)"
    )
    run.add_argument("--scenario", default="timeout_retry", choices=sorted(SCENARIOS))
    run.add_argument("--writes", type=_bounded_int(1, 10000), default=20)
    run.add_argument("--seed", type=int, default=1, help="seed of the fault plan (default: 1)")
    run.add_argument(
        "--timeout", type=_positive, default=1.0, help="seconds per attempt (default: 1)"
    )
    run.add_argument("--retries", type=_bounded_int(0, 20), default=4, help="(default: 4)")
    run.add_argument(
        "--backoff", type=_positive, default=0.1, help="first retry delay in seconds (default: 0.1)"
    )
    run.add_argument(
        "--backoff-max",
        type=_positive,
        default=2.0,
        help="maximum retry delay in seconds (default: 2)",
    )
    run.add_argument(
        "--settle",
        type=float,
        default=1.0,
        help="seconds to wait after the faults healed before reading back (default: 1)",
    )
    run.add_argument(
        "--fail-under",
        type=_bounded_int(0, 100),
        default=DEFAULT_FAIL_UNDER,
        help="exit 1 when the score is below this (default: 75, the lowest score of a run "
        "with no data loss, duplicate or failed recovery)",
    )
    run.add_argument("--junit", type=Path, metavar="FILE", help="write a JUnit XML report")
    run.add_argument("--ledger", type=Path, metavar="FILE", help="write the full ledger as JSON")
    run.add_argument(
        "--spool",
        type=Path,
        metavar="FILE",
        help="where to spool events when the cloud is unreachable "
        "(default: ./softadastra-spool-<run tag>.jsonl)",
    )
    _add_cloud_options(run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="softadastra-agent",
        description="Run network-failure scenarios against an HTTP API and score how "
        "well it keeps its data.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _add_verbosity(parser, 0)
    commands = parser.add_subparsers(dest="command", required=True)
    _add_run_parser(commands)
    upload = commands.add_parser("upload", help="send a spooled run to the cloud")
    upload.add_argument("spool", type=Path, help="spool file written by an earlier run")
    _add_cloud_options(upload)
    commands.add_parser("scenarios", help="list the scenarios")
    return parser


def _parse_headers(parser: argparse.ArgumentParser, raw: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for item in raw:
        name, colon, value = item.partition(":")
        if not colon or not name.strip() or any(c.isspace() for c in name.strip()):
            parser.error(f"--header {item.split(':')[0]!r}... is invalid; use 'Name: value'")
        headers[name.strip()] = value.strip()
    return headers


def _check_url(
    parser: argparse.ArgumentParser, option: str, url: str, schemes: tuple[str, ...]
) -> None:
    parts = urlsplit(url)
    if parts.scheme == "https" and "https" not in schemes:
        parser.error(
            f"{option} {url!r} uses https: the fault proxy forwards plain TCP and cannot "
            "inject faults inside TLS; point the agent at the service's http:// address"
        )
    if parts.scheme not in schemes or not parts.hostname:
        parser.error(f"{option} {url!r} must be an absolute {' or '.join(schemes)} URL")


def _run_config(parser: argparse.ArgumentParser, args: argparse.Namespace) -> RunConfig:
    _check_url(parser, "--target", args.target, ("http",))
    verify_url = args.verify_url or args.target
    _check_url(parser, "--verify-url", verify_url, ("http", "https"))
    if MARKER_PLACEHOLDER not in args.body:
        parser.error(f"--body must contain {MARKER_PLACEHOLDER}, where each write's marker goes")
    if args.cloud_url and not args.agent_key:
        parser.error("--cloud-url needs --agent-key or SOFTADASTRA_AGENT_KEY")
    return RunConfig(
        target=WriteTarget(
            url=args.target,
            method=args.method,
            headers=_parse_headers(parser, args.header),
            body_template=args.body,
            idempotency_header=args.idempotency_header,
        ),
        verify_url=verify_url,
        scenario=SCENARIOS[args.scenario],
        writes=args.writes,
        seed=args.seed,
        policy=RetryPolicy(
            timeout_s=args.timeout,
            retries=args.retries,
            backoff_s=args.backoff,
            backoff_max_s=args.backoff_max,
        ),
        fail_under=args.fail_under,
        settle_s=max(0.0, args.settle),
        score_timeout_s=args.score_timeout,
        cloud_url=args.cloud_url,
        agent_key=args.agent_key,
        spool_path=args.spool,
        junit_path=args.junit,
        ledger_path=args.ledger,
    )


async def _upload(args: argparse.Namespace) -> int:
    cloud = CloudClient(args.cloud_url, args.agent_key)
    try:
        run_id, sent = await upload_spool(cloud, args.spool)
        if not sent:
            print(f"run {cloud.run_url(run_id)} is already final; nothing to send")
            return 0
        score = await cloud.wait_score(run_id, args.score_timeout)
    finally:
        await cloud.aclose()
    settled = "settled" if score.get("settled") else "not settled yet"
    print(f"uploaded {args.spool} to {cloud.run_url(run_id)}")
    print(f"score {score.get('score')} (grade {score.get('grade')}), {settled}")
    return 0


def _configure_logging(verbosity: int) -> None:
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    logging.basicConfig(
        level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    # httpx logs every request at INFO; that is only useful when debugging.
    logging.getLogger("httpx").setLevel(logging.DEBUG if verbosity > 1 else logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    if args.command == "scenarios":
        for name, scenario in sorted(SCENARIOS.items()):
            print(f"{name:<18} {scenario.description}")
        return 0
    if args.command == "upload" and not (args.cloud_url and args.agent_key):
        parser.error("upload needs --cloud-url and --agent-key (or their environment variables)")
    try:
        if args.command == "upload":
            return asyncio.run(_upload(args))
        config = _run_config(parser, args)
        report = asyncio.run(run_agent(config, sys.stdout))
        return 1 if report is None else write_outputs(config, report)
    except CloudError as exc:
        print(f"softadastra-agent: the cloud rejected a request: {exc}", file=sys.stderr)
    except CloudUnavailable as exc:
        print(f"softadastra-agent: the cloud is unreachable: {exc}", file=sys.stderr)
    except (OSError, ValueError) as exc:
        print(f"softadastra-agent: {exc}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
