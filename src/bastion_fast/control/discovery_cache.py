"""A short-lived on-disk cache of the Bastion ARM GET, so a warm start skips the SDK import and the ARM call.

Why: ``bastion-fast tunnel``/``proxy`` are started again and again (an ssh ``ProxyCommand`` starts one per ssh
connection), and the discovery they repeat is the slowest part of a cold start: importing azure-mgmt-network costs
0.2–0.4 s of CPU, the ARM GET one more round trip. What discovery learns — ``dnsName``, SKU, ``enableTunneling``,
``enableIpConnect``, ``provisioningState``, the resource id — rarely changes (USERS.md §8 item 13).

Theory of operation
-------------------
One JSON file per Bastion in the user cache directory (``platformdirs``; ``BASTION_FAST_CACHE_DIR`` overrides),
named by a hash of the key *cloud + ARM endpoint + subscription + resource group + name* (case-insensitive, as ARM
names are). An entry is written only after a successful ``bastion_hosts.get`` whose answer passed the checks
(``discovery.check_bastion``), and it is used only while younger than the TTL (``--discovery-cache-ttl``, default
12 h; 0 disables reading *and* writing). A loaded entry is checked by the same rules as fresh data; when they
refuse it, the caller asks ARM again instead of reporting a refusal that may be stale. When a later token exchange
fails in a way stale data could explain, the control plane drops the entry and rediscovers (``plane.py``).

The file holds no secret — the ARM token never comes near it — but it decides where the ARM token is sent
(``https://{dnsName}/api/tokens``), so it is treated like a credential file: directory 0700, file 0600, written
to a temporary name and renamed into place (readers never see half a file), and on POSIX an entry is ignored
unless it is owned by the current user and not writable by group or others. Every problem with the cache (unreadable,
corrupt, foreign, a full disk) only means "ask ARM"; it is logged at debug level and never fails a command.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import stat
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bastion_fast.control.models import BastionInfo
from bastion_fast.exceptions import UsageError

__all__ = [
    "CACHE_DIR_ENV",
    "CACHE_TTL_ENV",
    "DEFAULT_TTL",
    "CacheKey",
    "DiscoveryCache",
    "default_cache_dir",
    "parse_ttl",
]

log = logging.getLogger("bastion_fast.control.discovery_cache")

CACHE_TTL_ENV = "BASTION_FAST_DISCOVERY_CACHE_TTL"
CACHE_DIR_ENV = "BASTION_FAST_CACHE_DIR"
DEFAULT_TTL = 43200.0  # 12 h: a wrong entry heals itself (see above), a re-discovery costs ~45 MB and 0.3 s
"""Ten minutes: long enough for a burst of ssh/scp runs, short enough that a changed Bastion is seen soon."""

FORMAT = 1
MAX_FILE_BYTES = 16 * 1024  # an entry is ~600 bytes; anything bigger is not ours
CLOCK_SKEW = 60.0  # an entry "from the future" by more than this is ignored
_HOST = re.compile(r"^[A-Za-z0-9.\-]{1,253}(:\d{1,5})?$")
_FIELDS = ("id", "name", "resource_group", "subscription", "sku", "dns_name", "enable_tunneling",
           "enable_ip_connect", "provisioning_state")


def parse_ttl(value: object, *, source: str) -> float:
    """Seconds from a flag, profile or environment value (``0`` disables the cache).

    Raises:
        UsageError: not a number, or negative.
    """
    try:
        ttl = float(str(value).strip())
    except ValueError:
        ttl = -1.0
    if not ttl >= 0 or ttl == float("inf"):  # also rejects NaN
        raise UsageError(f"{source} {value!r} is not a number of seconds.",
                         hint="Use e.g. 3600 (an hour), or 0 to turn the discovery cache off.")
    return ttl


def default_cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$BASTION_FAST_CACHE_DIR/discovery``, else ``<user cache dir>/bastion-fast/discovery``."""
    env = os.environ if env is None else env
    override = env.get(CACHE_DIR_ENV, "").strip()
    if override:
        return Path(override).expanduser() / "discovery"
    import platformdirs

    return Path(platformdirs.user_cache_dir("bastion-fast", appauthor=False)) / "discovery"


@dataclass(frozen=True)
class CacheKey:
    """Which Bastion an entry describes; two different endpoints or clouds never share an entry."""

    cloud: str
    arm_endpoint: str
    subscription: str
    resource_group: str
    name: str

    @classmethod
    def of(cls, *, cloud: str, arm_endpoint: str, subscription: str, resource_group: str, name: str) -> CacheKey:
        return cls(cloud=cloud, arm_endpoint=arm_endpoint.rstrip("/").lower(), subscription=subscription.lower(),
                   resource_group=resource_group.lower(), name=name.lower())

    def as_dict(self) -> dict[str, str]:
        return asdict(self)

    @property
    def filename(self) -> str:
        digest = hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()
        return f"{digest[:40]}.json"


def _owned_privately(st: os.stat_result) -> bool:
    """POSIX: ours and not writable by anyone else (a planted entry could send the ARM token elsewhere)."""
    if sys.platform == "win32":  # per-user profile ACLs protect the cache directory there
        return True
    return st.st_uid == os.geteuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


class DiscoveryCache:
    """Load, store and drop cached ``BastionInfo`` entries (see the module docstring).

    Args:
        ttl: seconds an entry stays valid (> 0).
        directory: where entries live (default: :func:`default_cache_dir`).
        clock: seconds since the epoch (tests pass a fake).
    """

    def __init__(self, ttl: float, *, directory: Path | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.ttl = ttl
        self.directory = directory if directory is not None else default_cache_dir()
        self._clock = clock

    def path(self, key: CacheKey) -> Path:
        return self.directory / key.filename

    # -- read -------------------------------------------------------------------------------------------------------

    def load(self, key: CacheKey) -> BastionInfo | None:
        """The entry for ``key`` if it exists, is ours, well-formed and younger than the TTL; else ``None``."""
        path = self.path(key)
        try:
            raw = self._read_private(path)
        except FileNotFoundError:
            log.debug("discovery cache: no entry for %s/%s", key.resource_group, key.name)
            return None
        except (OSError, ValueError) as exc:
            log.debug("discovery cache: ignoring %s (%s)", path, exc)
            return None
        try:
            doc = json.loads(raw)
            info, stored_at = self._parse(doc, key)
        except (ValueError, TypeError, KeyError) as exc:
            log.debug("discovery cache: ignoring malformed %s (%s)", path, exc)
            return None
        age = self._clock() - stored_at
        if age < -CLOCK_SKEW or age >= self.ttl:
            log.debug("discovery cache: entry for %s/%s is %.0f s old (TTL %g s): not used", key.resource_group,
                      key.name, age, self.ttl)
            return None
        log.debug("discovery cache: using the entry for %s/%s (%.0f s old)", key.resource_group, key.name, age)
        return info

    @staticmethod
    def _read_private(path: Path) -> bytes:
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
        fd = os.open(path, flags)
        try:
            st = os.fstat(fd)  # of the file actually opened: no window between check and read
            if not stat.S_ISREG(st.st_mode) or not _owned_privately(st):
                raise ValueError("not a private regular file of this user")
            if st.st_size > MAX_FILE_BYTES:
                raise ValueError(f"{st.st_size} bytes is too big for an entry")
            return os.read(fd, MAX_FILE_BYTES + 1)
        finally:
            os.close(fd)

    @staticmethod
    def _parse(doc: Any, key: CacheKey) -> tuple[BastionInfo, float]:
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError("unknown format")
        if doc.get("key") != key.as_dict():
            raise ValueError("entry of another Bastion")
        stored_at = doc["stored_at"]
        if not isinstance(stored_at, int | float) or isinstance(stored_at, bool):
            raise TypeError("stored_at")
        data = doc["bastion"]
        if not isinstance(data, dict):
            raise TypeError("bastion")
        for name in ("id", "name", "resource_group", "subscription", "sku", "dns_name"):
            if not isinstance(data.get(name), str) or not data[name]:
                raise TypeError(name)
        for name in ("enable_tunneling", "enable_ip_connect"):
            if not isinstance(data.get(name), bool):
                raise TypeError(name)
        state = data.get("provisioning_state")
        if state is not None and not isinstance(state, str):
            raise TypeError("provisioning_state")
        if not _HOST.match(data["dns_name"]):
            raise ValueError("dns_name is not host[:port]")
        info = BastionInfo(id=data["id"], name=data["name"], resource_group=data["resource_group"],
                           subscription=data["subscription"], sku=data["sku"], dns_name=data["dns_name"],
                           enable_tunneling=data["enable_tunneling"], enable_ip_connect=data["enable_ip_connect"],
                           provisioning_state=state)
        return info, float(stored_at)

    # -- write ------------------------------------------------------------------------------------------------------

    def store(self, key: CacheKey, info: BastionInfo) -> bool:
        """Write the entry atomically (0600 in a 0700 directory). Returns False (and logs) when it could not."""
        doc = {"format": FORMAT, "key": key.as_dict(), "stored_at": self._clock(),
               "bastion": {name: getattr(info, name) for name in _FIELDS}}
        data = json.dumps(doc, indent=1, sort_keys=True).encode()
        import tempfile  # only on the cold path (a cache hit never writes)

        tmp: str | None = None
        try:
            self._make_directory()
            fd, tmp = tempfile.mkstemp(prefix=".entry-", suffix=".tmp", dir=self.directory)  # created 0600
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, self.path(key))
            tmp = None
        except OSError as exc:
            log.debug("discovery cache: could not write %s (%s)", self.path(key), exc)
            return False
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
        log.debug("discovery cache: stored %s/%s for %g s", key.resource_group, key.name, self.ttl)
        return True

    def _make_directory(self) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if sys.platform != "win32":
            st = self.directory.stat()
            if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) & 0o077:
                os.chmod(self.directory, 0o700)  # created by an older version or another umask

    def drop(self, key: CacheKey) -> None:
        """Forget the entry (after data it held proved stale); a missing entry is fine."""
        try:
            os.unlink(self.path(key))
            log.debug("discovery cache: dropped the entry for %s/%s", key.resource_group, key.name)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.debug("discovery cache: could not drop %s (%s)", self.path(key), exc)
