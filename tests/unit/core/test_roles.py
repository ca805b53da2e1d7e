"""What each console role may do: releasing money and handling incidents are two roles."""

from __future__ import annotations

from worker.core.roles import Permission, Role, allows


def test_each_role_s_permissions() -> None:
    assert [p for p in Permission if allows(Role.VIEWER, p)] == [Permission.READ]
    assert allows(Role.OPERATOR, Permission.OPERATE)
    assert not allows(Role.OPERATOR, Permission.APPROVE)
    assert allows(Role.APPROVER, Permission.APPROVE)
    assert not allows(Role.APPROVER, Permission.OPERATE)
    assert not allows(Role.APPROVER, Permission.MANAGE_USERS)
    assert all(allows(Role.ADMIN, p) for p in Permission)
    assert not allows("root", Permission.READ)  # an unknown role: nothing
