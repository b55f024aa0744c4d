from __future__ import annotations

import asyncpg

from core.repositories import summaries as summaries_repo
from core.scoring import RISK_FLAGS, grade_for
from schema.responses import LatestScore, ProjectScores, ProjectTotals, TrendPoint

__all__ = ["project_summary"]

SCORED_STATUSES = ("finished",)


async def project_summary(
    conn: asyncpg.Connection, *, project: asyncpg.Record, last: int
) -> ProjectScores:
    """Latest score, average and flag counts over a project's last `last` runs.

    Only finished runs have a verdict: open runs are still changing, and a failed or
    cancelled run stopped before its test ended, so its score (100 when it stopped
    before any event) would flatter the latest score and the average. The trend lists
    every run, and `totals` counts every run of the project.
    """
    rows = await summaries_repo.recent_run_scores(conn, project_key=project["id"], limit=last)
    totals = await summaries_repo.project_totals(conn, project_key=project["id"])
    final = [row for row in rows if row["status"] in SCORED_STATUSES]
    average = round(sum(row["score"] for row in final) / len(final), 1) if final else None
    latest = final[0] if final else None
    return ProjectScores(
        project_id=project["public_id"],
        runs_considered=len(rows),
        final_runs=len(final),
        latest=None
        if latest is None
        else LatestScore(run_id=latest["run_id"], score=latest["score"], grade=latest["grade"]),
        average_score=average,
        average_grade=grade_for(round(average)) if average is not None else None,
        runs_flagged={flag: sum(1 for row in final if row[flag] > 0) for flag in RISK_FLAGS},
        trend=[
            TrendPoint(
                run_id=row["run_id"],
                status=row["status"],
                scenario=row["scenario"],
                score=row["score"],
                grade=row["grade"],
                created_at=row["created_at"],
                finished_at=row["finished_at"],
            )
            for row in reversed(rows)
        ],
        totals=ProjectTotals(
            runs=totals["runs"],
            finished_runs=totals["finished_runs"],
            runs_flagged={flag: totals[flag] for flag in RISK_FLAGS},
        ),
    )
