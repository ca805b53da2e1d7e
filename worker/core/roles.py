"""The console's roles and what each may do: viewer reads; operator cancels, pauses,
retries and resolves; approver approves; admin manages users (and may do everything).
A role does not include the ones before it except where said: an approver is not an
operator, so that releasing money and handling incidents stay two people's jobs."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    APPROVER = "approver"
    ADMIN = "admin"


class Permission(StrEnum):
    READ = "read"
    OPERATE = "operate"  # cancel, pause, resume, retry, resolve, redeliver
    APPROVE = "approve"
    MANAGE_USERS = "manage_users"


GRANTS: dict[Role, frozenset[Permission]] = {
    Role.VIEWER: frozenset({Permission.READ}),
    Role.OPERATOR: frozenset({Permission.READ, Permission.OPERATE}),
    Role.APPROVER: frozenset({Permission.READ, Permission.APPROVE}),
    Role.ADMIN: frozenset(Permission),
}


def allows(role: Role | str, permission: Permission) -> bool:
    """Whether ``role`` may do what ``permission`` names (an unknown role: nothing)."""
    try:
        return permission in GRANTS[Role(role)]
    except ValueError:
        return False
