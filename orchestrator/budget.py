"""The failure budget: how many node failures a run tolerates before it stops starting nodes.

A value object: recording a failure returns a new budget, so the scheduler's history of decisions
can be replayed and tested without shared state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any

from orchestrator.inventory import FailureBudgetPolicy


@dataclass(frozen=True)
class FailureBudget:
    policy: FailureBudgetPolicy
    total: int
    """Number of nodes in the run; the base of max_failure_percent."""
    canary_batch: bool = False
    """Batch 0 is a canary: a single failure there spends the budget, whatever the policy says."""
    failures: int = 0
    batch_failures: tuple[tuple[int, int], ...] = field(default=())
    """(batch index, failures) for every batch that had one."""

    @property
    def tolerated(self) -> int:
        """Failures the run may have in total and go on."""
        limits = []
        if self.policy.max_failures is not None:
            limits.append(self.policy.max_failures)
        if self.policy.max_failure_percent is not None:
            # Fraction(str(...)): 10% of 30 nodes is exactly 3, not 2.9999...
            limits.append(math.floor(Fraction(str(self.policy.max_failure_percent)) * self.total / 100))
        return min(limits, default=0)

    def record_failure(self, batch: int) -> FailureBudget:
        counts = dict(self.batch_failures)
        counts[batch] = counts.get(batch, 0) + 1
        return replace(self, failures=self.failures + 1, batch_failures=tuple(sorted(counts.items())))

    def failures_in(self, batch: int) -> int:
        return dict(self.batch_failures).get(batch, 0)

    @property
    def spent(self) -> str | None:
        """Why no new node may start, or None while the failures are within the budget."""
        if self.failures > self.tolerated:
            return f"{self.failures} failures exceed the {self.tolerated} tolerated"
        if self.canary_batch and self.failures_in(0):
            return "the canary batch failed"
        per_batch = self.policy.per_batch
        if per_batch is not None:
            for batch, count in self.batch_failures:
                if count > per_batch:
                    return f"{count} failures in batch {batch + 1} exceed the {per_batch} tolerated per batch"
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            **self.policy.model_dump(),
            "tolerated": self.tolerated,
            "failures": self.failures,
            "spent": self.spent,
        }
