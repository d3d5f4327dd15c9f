"""What ``safesignal provision --dashboard URL --token TOKEN`` posts: the provisioning record.

Standard library only, so the host tools post without the ``dashboard`` extra.  The token is
sent in the Authorization header and never shown in a message.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from safesignal.errors import SafeSignalError, UsageError

TOKEN_ENV = "SAFESIGNAL_DASHBOARD_TOKEN"


class DashboardError(SafeSignalError):
    """The dashboard could not be reached or refused the record (the device is provisioned)."""

    exit_code = 10


def check_url(url: str) -> str:
    u = urllib.parse.urlsplit(url)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise UsageError("--dashboard: the dashboard's URL, http(s)://host[:port]")
    return url.rstrip("/")


def post_provisioning(url: str, token: str, record: dict[str, Any], timeout: float = 15.0) -> dict[str, Any]:
    """POST /api/provisionings; the stored record as the dashboard answers it."""
    req = urllib.request.Request(check_url(url) + "/api/provisionings", data=json.dumps(record).encode(),
                                 method="POST", headers={"Authorization": f"Bearer {token}",
                                                         "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            answer: dict[str, Any] = json.loads(resp.read())
            return answer
    except urllib.error.HTTPError as e:
        try:
            why = json.loads(e.read()).get("error", "")
        except (ValueError, AttributeError, OSError):
            why = ""
        raise DashboardError(f"the dashboard at {url} refused the provisioning record: HTTP {e.code}"
                             + (f" ({why})" if why else "")) from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise DashboardError(f"the dashboard at {url} could not be reached: {reason}") from None
