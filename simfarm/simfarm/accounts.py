"""Windows account names as clients write them, reduced to one form.

`WEB-001\\orchestrator-demo`, `.\\orchestrator-demo`, `orchestrator-demo@web-001` and
`orchestrator-demo` name the same local account; Windows compares account names without regard to
case. Authentication, the per-user shell quotas and the event log all go through this module, so a
client cannot dodge a quota, or appear as two users in the log, by spelling its name another way.
"""

from __future__ import annotations


def account_of(name: str) -> str:
    """The account's own name from `DOMAIN\\user`, `user@domain` or `user`, as the client spelled it."""
    if "\\" in name:
        return name.rsplit("\\", 1)[1]
    if "@" in name:
        return name.split("@", 1)[0]
    return name


def same_account(a: str, b: str) -> bool:
    return account_of(a).lower() == account_of(b).lower()


def canonical(name: str, known: str) -> str:
    """How Windows writes the account in its logs: the stored name of the account it resolved to."""
    return account_of(known) if same_account(name, known) else account_of(name)
