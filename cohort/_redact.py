"""Keeping credentials out of every text we store or print.

Two defences: URLs that carry a credential in their query string are refused
(:func:`credential_query_params`), and error texts (server bodies, exception
messages) pass through :func:`redact` before they are logged, written to
Parquet or raised: the configured secrets are replaced, and so is anything
shaped like an ``Authorization`` value or a credential query parameter, since
a server may echo a header we never saw (a proxy's, a cookie).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, urlsplit

REDACTED = "[redacted]"

#: Query parameter names that carry credentials (lower case); ``x-amz-*``/``x-goog-*`` too (signed URLs).
CREDENTIAL_PARAMS = frozenset({
    "access_token", "id_token", "refresh_token", "token", "auth", "authorization", "key", "apikey", "api_key",
    "api-key", "password", "passwd", "pwd", "secret", "client_secret", "sig", "signature", "code", "session",
    "sessionid", "jwt",
})
_CREDENTIAL_PREFIXES = ("x-amz-", "x-goog-")
_SCHEMES = r"Bearer|Basic|Digest|Negotiate|NTLM|Token|ApiKey|AWS4-HMAC-SHA256|OAuth"
_PATTERNS = (
    # "Authorization: anything" and "Proxy-Authorization=..." up to the end of the line or a quote
    (re.compile(r"(?i)\b((?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?)[^\"'\r\n,}]+"), r"\1" + REDACTED),
    # "Bearer abc.def", "Basic dXNlcjpwdw==" wherever they appear (not "Basic authentication")
    (re.compile(rf"(?i)\b({_SCHEMES})(\s+)([A-Za-z0-9._~+/=:-]{{8,}})"),
     lambda m: m.group(1) + m.group(2) + (REDACTED if _token_like(m.group(3)) else m.group(3))),
    # credential query parameters: access_token=..., X-Amz-Signature=...
    (re.compile(r"(?i)\b((?:x-amz-|x-goog-)[a-z0-9-]+|" + "|".join(map(re.escape, sorted(CREDENTIAL_PARAMS)))
                + r")=[^&\s\"'<>]+"), r"\1=" + REDACTED),
)


def _token_like(word: str) -> bool:
    return len(word) >= 20 or any(c.isdigit() or c in "._~+/=-" for c in word)


def is_credential_param(name: str) -> bool:
    name = name.strip().lower()
    return name in CREDENTIAL_PARAMS or name.startswith(_CREDENTIAL_PREFIXES)


def credential_query_params(url: str) -> list[str]:
    """Names of the query parameters of ``url`` that carry credentials (values never returned)."""
    return [name for name, _ in parse_qsl(urlsplit(url).query, keep_blank_values=True) if is_credential_param(name)]


def redact(text: str | None, secrets: Iterable[str] = ()) -> str | None:
    """``text`` with each of ``secrets`` (and its base64 form) and anything credential-shaped replaced."""
    if not text:
        return text
    for secret in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def session_secrets(session) -> tuple[str, ...]:
    """The secrets a requests session sends: header values other than the harmless ones, basic-auth
    user:password (plain and base64), a google-auth session's current token."""
    harmless = {"user-agent", "accept", "accept-encoding", "connection", "content-type"}
    found: list[str] = []
    for name, value in session.headers.items():
        if name.lower() in harmless or not isinstance(value, str):
            continue
        found.append(value)
        scheme, _, token = value.partition(" ")
        if token:
            found.append(token.strip())
    auth = getattr(session, "auth", None)
    if isinstance(auth, tuple) and len(auth) == 2:
        user, password = (str(v) for v in auth)
        found += [password, base64.b64encode(f"{user}:{password}".encode()).decode()]
    token = getattr(getattr(session, "credentials", None), "token", None)
    if isinstance(token, str):
        found.append(token)
    return tuple(found)
