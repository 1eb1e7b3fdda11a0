"""``/api/jobs``: one view over running, pending and finished prompts (pure functions).

Unlike ``/history`` (``{}`` for unknown AND unfinished ids) the jobs API tells the states
apart: ``pending | in_progress | completed | failed | cancelled`` (an interrupted job is
``cancelled``, any other error ``failed``), 404 ``{"error": "Job not found"}`` otherwise.
Shapes as recorded in queue_history_shapes.json: list entries carry counts and a preview,
a single finished job adds ``outputs``, ``execution_status`` and ``workflow``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from .executor import Job

STATUSES = ("pending", "in_progress", "completed", "failed", "cancelled")


def _workflow_id(extra_data: dict[str, Any]) -> Any:
    pnginfo = extra_data.get("extra_pnginfo") or {}
    workflow = pnginfo.get("workflow") if isinstance(pnginfo, dict) else None
    return workflow.get("id") if isinstance(workflow, dict) else None


def _prune(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def outputs_summary(outputs: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
    """Outputs count and the preview the jobs API shows (a saved output image first)."""
    count = 0
    preview = fallback = None
    for node_id, node_outputs in outputs.items():
        if not isinstance(node_outputs, dict):
            continue
        for media_type, items in node_outputs.items():
            if media_type == "animated" or not isinstance(items, list):
                continue
            for item in items:
                if not isinstance(item, dict):
                    continue
                count += 1
                if preview is None and media_type in ("images", "video", "audio"):
                    enriched = {**item, "nodeId": node_id, "mediaType": media_type}
                    if item.get("type") == "output":
                        preview = enriched
                    elif fallback is None:
                        fallback = enriched
    return count, preview or fallback


def from_queue(job: Job, status: str) -> dict[str, Any]:
    return _prune({"id": job.prompt_id, "status": status, "priority": job.number,
                   "create_time": job.extra_data.get("create_time"), "outputs_count": 0,
                   "previewable_outputs_count": 0, "workflow_id": _workflow_id(job.extra_data)})


def from_history(prompt_id: str, item: dict[str, Any], full: bool) -> dict[str, Any]:
    priority, _, prompt, extra_data, _ = item["prompt"]
    status_info = item.get("status") or {}
    start = end = error = None
    interrupted = False
    for event, data in status_info.get("messages", []):
        if event == "execution_start":
            start = data.get("timestamp")
        elif event in ("execution_success", "execution_error", "execution_interrupted"):
            end = data.get("timestamp")
            if event == "execution_error":
                error = data
            elif event == "execution_interrupted":
                interrupted = True
    if status_info.get("status_str") == "error":
        status = "cancelled" if interrupted else "failed"
    else:
        status = "completed"
    outputs = item.get("outputs", {})
    count, preview = outputs_summary(outputs)
    job = _prune({"id": prompt_id, "status": status, "priority": priority,
                  "create_time": extra_data.get("create_time"), "execution_start_time": start,
                  "execution_end_time": end, "execution_error": error, "outputs_count": count,
                  "previewable_outputs_count": count, "preview_output": preview,
                  "workflow_id": _workflow_id(extra_data)})
    if full:
        job["outputs"] = outputs
        job["execution_status"] = status_info
        job["workflow"] = {"prompt": prompt, "extra_data": extra_data}
    return copy.deepcopy(job)


def all_jobs(running: Job | None, pending: list[Job], history: dict[str, Any]
             ) -> list[dict[str, Any]]:
    jobs = [from_queue(running, "in_progress")] if running is not None else []
    jobs.extend(from_queue(job, "pending") for job in pending)
    jobs.extend(from_history(pid, item, False) for pid, item in history.items())
    return jobs


def find_job(job_id: str, running: Job | None, pending: list[Job], history: dict[str, Any]
             ) -> dict[str, Any] | None:
    if job_id in history:
        return from_history(job_id, history[job_id], True)
    if running is not None and running.prompt_id == job_id:
        return from_queue(running, "in_progress")
    for job in pending:
        if job.prompt_id == job_id:
            return from_queue(job, "pending")
    return None


def list_jobs(jobs: list[dict[str, Any]], query: Mapping[str, str]
              ) -> tuple[int, dict[str, Any]]:
    """Filter, sort (create_time desc by default) and page; ``(status, body)``."""
    statuses = [s for s in query.get("status", "").split(",") if s] or list(STATUSES)
    if any(s not in STATUSES for s in statuses):
        return 400, {"error": f"status must be among {', '.join(STATUSES)}"}
    try:
        limit = int(query["limit"]) if "limit" in query else None
        offset = int(query.get("offset", "0"))
    except ValueError:
        return 400, {"error": "limit and offset must be integers"}
    if (limit is not None and limit < 0) or offset < 0:
        return 400, {"error": "limit and offset must not be negative"}
    jobs = [j for j in jobs if j["status"] in statuses]
    if "workflow_id" in query:
        jobs = [j for j in jobs if j.get("workflow_id") == query["workflow_id"]]
    if "ids" in query:
        wanted = {i.strip() for i in query["ids"].split(",") if i.strip()}
        jobs = [j for j in jobs if j["id"] in wanted]

    def duration(j: dict[str, Any]) -> Any:
        s, e = j.get("execution_start_time", 0), j.get("execution_end_time", 0)
        return e - s if s and e else 0

    def created(j: dict[str, Any]) -> Any:
        return j.get("create_time", 0)

    key = duration if query.get("sort_by") == "execution_duration" else created
    jobs = sorted(jobs, key=key, reverse=query.get("sort_order", "desc") == "desc")
    total = len(jobs)
    page = jobs[offset:] if limit is None else jobs[offset:offset + limit]
    return 200, {"jobs": page, "pagination": {"offset": offset, "limit": limit, "total": total,
                                              "has_more": offset + len(page) < total}}
