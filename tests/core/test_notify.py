"""What a notification says, and which webhooks a run can use (no network)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from orchestrator.inventory import Webhook
from orchestrator.notify import Notifier, end_payload, moment_of
from orchestrator.results import NodeResult, RunResult


def result(outcome: str, rotation: str = "in") -> RunResult:
    t0 = datetime(2030, 1, 1, 2, tzinfo=UTC)
    return RunResult.model_validate(
        {
            "run_id": "r-1",
            "tool_version": "0.1.0",
            "inventory_path": "/srv/farm.yaml",
            "started_at": t0,
            "ended_at": t0,
            "outcome": outcome,
            "nodes": [
                NodeResult(name="web-01", host="h1", outcome="done", rotation="in").model_dump(),
                NodeResult(name="web-02", host="h2", outcome="failed", rotation=rotation).model_dump(),
            ],
        }
    )


@pytest.mark.parametrize(
    ("outcome", "moment"),
    [
        ("succeeded", "finish"),
        ("partial", "finish"),
        ("aborted_budget", "abort"),
        ("aborted_signal", "abort"),
        ("preflight_refused", "abort"),
        ("internal_error", "abort"),
    ],
)
def test_a_run_that_went_through_finished_any_other_aborted(outcome: str, moment: str) -> None:
    assert moment_of(result(outcome)) == moment
    assert end_payload(result(outcome))["event"] == moment


def test_the_summary_is_one_line_naming_outcome_counts_and_nodes_left_out() -> None:
    payload = end_payload(result("partial", rotation="out"))
    assert payload["text"] == (
        "orchestrator run r-1 on /srv/farm.yaml: partial (exit 4): 1 done, 1 failed, 0 interrupted, "
        "0 not started of 2; out of rotation: web-02"
    )
    assert payload["out_of_rotation"] == ["web-02"] and payload["totals"]["failed"] == 1


def test_a_webhook_whose_variables_are_not_set_is_skipped_not_fatal() -> None:
    hooks = [
        Webhook(url_env="HOOK_URL"),
        Webhook(url_env="HOOK_URL", token_env="HOOK_TOKEN"),
        Webhook(url="http://127.0.0.1:9/x"),
    ]
    assert [t.index for t in Notifier(hooks, {})._targets] == [2]
    assert [t.index for t in Notifier(hooks, {"HOOK_URL": "http://127.0.0.1:9/y"})._targets] == [0, 2]


def test_a_webhook_needs_exactly_one_url() -> None:
    with pytest.raises(ValueError, match="exactly one of url and url_env"):
        Webhook(url="http://a/b", url_env="HOOK_URL")
    with pytest.raises(ValueError, match="exactly one of url and url_env"):
        Webhook()
