"""The inventory: which nodes to restart, how to reach them, and the rollout policy.

An inventory is YAML (reference: docs/inventory.md). Loading it checks everything that can be
checked without touching the network, and every problem becomes a `SourceError` naming the file,
line, column and field. `values` holds the value types, `model` the file's schema, `loader` the
layering of node settings; this module is the API the rest of the product uses.
"""

from orchestrator.inventory.loader import Inventory, load_inventory, parse_inventory
from orchestrator.inventory.model import (
    Action,
    CredentialsRef,
    FailureBudgetPolicy,
    Group,
    Health,
    InventoryFile,
    LoadBalancer,
    NodeHealth,
    NodeSpec,
    NodeTransport,
    Notify,
    Rollout,
    Timeouts,
    Transport,
    Webhook,
    json_schema,
)
from orchestrator.inventory.values import DEFAULT_PORTS, Share

__all__ = [
    "DEFAULT_PORTS",
    "Action",
    "CredentialsRef",
    "FailureBudgetPolicy",
    "Group",
    "Health",
    "Inventory",
    "InventoryFile",
    "LoadBalancer",
    "NodeHealth",
    "NodeSpec",
    "NodeTransport",
    "Notify",
    "Rollout",
    "Share",
    "Timeouts",
    "Transport",
    "Webhook",
    "json_schema",
    "load_inventory",
    "parse_inventory",
]
