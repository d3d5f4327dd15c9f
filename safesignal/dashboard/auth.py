"""Accounts of the dashboard: Argon2id password hashes (argon2-cffi), API tokens and browser
sessions.  Tokens and session cookies are 256-bit random values; only their SHA-256 is stored
(a fast hash is enough for a random secret of that size; passwords, chosen by people, get
Argon2).  Nothing here logs a password, a token or a cookie.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from safesignal.dashboard.db import ROLES, ApiToken, User, WebSession, utcnow
from safesignal.errors import UsageError

TOKEN_PREFIX = "ssd_"  # recognisable in a secret scanner; the rest is 32 random bytes, url-safe base64
SESSION_LIFETIME = dt.timedelta(hours=12)
MIN_PASSWORD = 8
_hasher = PasswordHasher()  # argon2-cffi's defaults: Argon2id, RFC 9106 low-memory profile


@dataclass(frozen=True)
class Principal:
    """Who a request acts for."""

    user_id: int
    name: str
    role: str
    csrf_token: str | None = None  # set for a browser session (forms must echo it)


def sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def check_name(name: str) -> str:
    if not (1 <= len(name) <= 64) or not all(c.isalnum() or c in "._-@" for c in name):
        raise UsageError("user name: 1-64 letters, digits, '.', '_', '-' or '@'")
    return name


def add_user(db: Session, name: str, role: str, password: str) -> str:
    """Create the account and its first API token; returns the token (shown once, stored hashed)."""
    check_name(name)
    if role not in ROLES:
        raise UsageError(f"--role: one of {', '.join(ROLES)}")
    if len(password) < MIN_PASSWORD:
        raise UsageError(f"the password is too short (at least {MIN_PASSWORD} characters); no account was made")
    if db.scalar(select(User.id).where(User.name == name)) is not None:
        raise UsageError(f"a user named {name} exists already")
    user = User(name=name, role=role, password_hash=_hasher.hash(password), created_at=utcnow())
    db.add(user)
    try:
        db.flush()
    except IntegrityError:
        db.rollback()
        raise UsageError(f"a user named {name} exists already") from None
    token = new_token(db, user.id)
    db.commit()
    return token


def new_token(db: Session, user_id: int) -> str:
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    db.add(ApiToken(user_id=user_id, token_sha256=sha256(token), created_at=utcnow()))
    return token


def by_token(db: Session, token: str) -> Principal | None:
    row = db.execute(select(User).join(ApiToken, ApiToken.user_id == User.id)
                     .where(ApiToken.token_sha256 == sha256(token))).scalar_one_or_none()
    return None if row is None else Principal(row.id, row.name, row.role)


def check_password(db: Session, name: str, password: str) -> User | None:
    """The user if ``password`` is theirs; None otherwise (unknown names cost a hash too).  It
    only reads: the slow hash must not hold the database's write lock (see :func:`open_session`)."""
    user = db.scalar(select(User).where(User.name == name))
    stored = user.password_hash if user is not None else _DUMMY_HASH
    try:
        _hasher.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None
    return user


_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def open_session(db: Session, user: User, password: str | None = None) -> str:
    """A new browser session for ``user`` (checked by :func:`check_password`); returns the cookie
    value.  With ``password``, a hash made with older Argon2 parameters is made again."""
    cookie = secrets.token_urlsafe(32)
    now = utcnow()
    if password is not None and _hasher.check_needs_rehash(user.password_hash):
        db.execute(update(User).where(User.id == user.id).values(password_hash=_hasher.hash(password)))
    db.execute(delete(WebSession).where(WebSession.expires_at < now))
    db.add(WebSession(user_id=user.id, session_sha256=sha256(cookie), csrf_token=secrets.token_urlsafe(32),
                      created_at=now, expires_at=now + SESSION_LIFETIME))
    db.commit()
    return cookie


def by_session(db: Session, cookie: str) -> Principal | None:
    row = db.execute(select(User, WebSession).join(WebSession, WebSession.user_id == User.id)
                     .where(WebSession.session_sha256 == sha256(cookie))).first()
    if row is None:
        return None
    user, ws = row
    if ws.expires_at <= utcnow():
        return None
    return Principal(user.id, user.name, user.role, ws.csrf_token)


def close_session(db: Session, cookie: str) -> None:
    db.execute(delete(WebSession).where(WebSession.session_sha256 == sha256(cookie)))
    db.commit()


def csrf_ok(principal: Principal, given: str | None) -> bool:
    return bool(principal.csrf_token and given and hmac.compare_digest(principal.csrf_token, given))
