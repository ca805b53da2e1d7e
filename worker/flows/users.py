"""The console's people: adding a user (a role, a password hashed with argon2id) and
signing one in, throttled after repeated failures of one name from one address."""

from __future__ import annotations

from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from worker.core.defaults import PASSWORD_MIN_LENGTH, SIGNIN_FAILURES, SIGNIN_WINDOW
from worker.core.exceptions import InputError, SignInRefused
from worker.core.roles import Role
from worker.ledger import Ledger
from worker.ledger.users import ConsoleUser

# argon2-cffi's defaults are RFC 9106's second recommended (low-memory) argon2id profile.
_HASHER = PasswordHasher()
# Verified when the name is unknown, so that a wrong name takes as long as a wrong password.
_DUMMY_HASH = _HASHER.hash("not anyone's password")
WRONG = "wrong name or password"


@dataclass(frozen=True)
class Accounts:
    ledger: Ledger
    failures: int = SIGNIN_FAILURES
    window: float = SIGNIN_WINDOW

    def add(self, name: str, role: str, password: str, *, by: str) -> ConsoleUser:
        """Add a user. Raises InputError for a taken name, an unknown role, a short password."""
        try:
            parsed = Role(role.strip().lower())
        except ValueError:
            raise InputError(
                f"no role {role!r}: one of {', '.join(r.value for r in Role)}"
            ) from None
        if len(password) < PASSWORD_MIN_LENGTH:
            raise InputError(f"a password has at least {PASSWORD_MIN_LENGTH} characters")
        hashed = _HASHER.hash(password)
        if not self.ledger.add_user(name, parsed.value, hashed, by=by):
            raise InputError(f"a user {name!r} exists already")
        return ConsoleUser(name, parsed.value, hashed)

    def sign_in(self, name: str, password: str, address: str) -> ConsoleUser:
        """The user, if ``password`` is theirs. Raises SignInRefused (wrong name or password,
        or too many failures of this name from this address within the window)."""
        if self.ledger.signin_failures(name, address, self.window) >= self.failures:
            raise SignInRefused(
                f"too many failed sign-ins; try again in {int(self.window // 60)} minutes"
            )
        user = self.ledger.user(name)
        try:
            _HASHER.verify(user.password_hash if user else _DUMMY_HASH, password)
        except (VerificationError, InvalidHashError):
            user = None
        if user is None:
            self.ledger.record_signin_failure(name, address, self.window)
            raise SignInRefused(WRONG)
        self.ledger.clear_signin_failures(name, address)
        if _HASHER.check_needs_rehash(user.password_hash):  # the parameters were raised
            self.ledger.set_password_hash(name, _HASHER.hash(password))
        return user
