"""Emulator configuration: dataclasses with the defaults from issue 3, loaded from TOML or built in code.

One :class:`EmulatorConfig` describes everything the emulator serves: the default Bastion host (plus optional
extra hosts), the target mapping, the strictness knobs and the initial faults. The CLI builds it from a TOML file
and then applies its flags on top; tests build it directly (``EmulatorConfig(default_target="sink")``).

TOML shape (every key optional; unknown keys are an error so typos do not pass silently)::

    bind = "127.0.0.1"            # allow_remote = true is needed for anything that is not loopback
    port = 0                      # data plane of the default Bastion (0 = a free port)
    arm_port = 0
    state_dir = "~/.cache/bastion-fast/emulator"
    subscription = "00000000-0000-0000-0000-000000000000"
    omit_false_booleans = false   # ARM leaves false booleans out, like the real service can
    default_target = "echo"       # HOST:PORT | echo | sink | source[:N] | "" (= none: unknown targets refused)

    [bastion]                     # the default Bastion host; [[bastions]] tables add more (same keys)
    name = "bastion-emulator"
    resource_group = "rg-emulator"
    sku = "Standard"              # Basic | Standard | Premium | Developer
    enable_tunneling = true
    enable_ip_connect = false
    nodes = 2                     # instances, each with its own nodeId 10.0.<n>.<4+i>

    [targets]                     # resource id, "resourceId:port" or "ip:port"  ->  target spec
    "/subscriptions/…/virtualMachines/vm1" = "127.0.0.1:2222"
    "10.1.0.4:22" = "echo"

    [knobs]                       # strictness, see Knobs
    max_client_frame = 65536

    [faults]                      # initial faults, see bastion_fast.emulator.faults.FaultConfig
    drop_after_bytes = 0
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bastion_fast.emulator.faults import FaultConfig
from bastion_fast.exceptions import ConfigurationError, UsageError

__all__ = [
    "DEFAULT_SUBSCRIPTION",
    "DEFAULT_TENANT",
    "SKUS",
    "BastionConfig",
    "EmulatorConfig",
    "Knobs",
    "is_loopback",
    "load_toml",
]

DEFAULT_SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
DEFAULT_TENANT = "00000000-0000-0000-0000-00000000e11a"
SKUS = ("Basic", "Standard", "Premium", "Developer")


@dataclass
class BastionConfig:
    """One emulated ``Microsoft.Network/bastionHosts`` resource and its data-plane listener."""

    name: str = "bastion-emulator"
    resource_group: str = "rg-emulator"
    sku: str = "Standard"
    location: str = "westeurope"
    enable_tunneling: bool = True
    enable_ip_connect: bool = False
    enable_shareable_link: bool = False
    enable_kerberos: bool = False
    enable_file_copy: bool = False
    disable_copy_paste: bool = False
    enable_session_recording: bool = False
    scale_units: int = 2
    nodes: int = 2
    port: int = 0
    tags: dict[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        if self.sku not in SKUS:
            raise ConfigurationError(
                f"Unknown Bastion SKU {self.sku!r} for {self.name!r}.", hint=f"Use one of: {', '.join(SKUS)}."
            )
        if not 1 <= self.nodes <= 50:
            raise ConfigurationError(f"Bastion {self.name!r}: nodes must be 1..50, got {self.nodes}.")
        if not 0 <= self.port <= 65535:
            raise ConfigurationError(f"Bastion {self.name!r}: port must be 0..65535, got {self.port}.")
        if not self.name or "/" in self.name or not self.resource_group or "/" in self.resource_group:
            raise ConfigurationError("Bastion name and resource group must be non-empty and contain no '/'.")


@dataclass
class Knobs:
    """Strictness knobs of the data plane (defaults from issue 3)."""

    max_client_frame: int = 65536
    """Largest client frame accepted; a bigger one is closed with 1009."""
    reject_continuation: bool = False
    """Close with 1002 on a continuation frame (tests the dfns claim that Bastion rejects them)."""
    require_mask: bool = True
    """Close with 1002 on an unmasked client frame (RFC 6455 §5.1)."""
    server_ping_interval: float | None = None
    """Send a ping every N seconds on each WebSocket (None = never)."""
    idle_timeout: float | None = None
    """Close a WebSocket with 1001 after N seconds without payload in either direction (None = never)."""
    server_frame_size: int = 16384
    """Largest frame the emulator sends to the client."""
    omit_upgrade_headers: bool = False
    """Send the 101 without ``Upgrade``/``Connection`` (the unverified vgamayunov/azcli claim)."""
    token_ttl: float = 60.0
    """Seconds a websocketToken stays usable after it was issued (it is also single-use)."""
    ip_connect_ports: tuple[int, ...] = (22, 3389)
    """Ports allowed for IP-based connection (the CLI's rule; server enforcement is unknown)."""
    strict_auth: bool = False
    """Check that bearer tokens are JWTs for the ARM audience and not expired (else any bearer is accepted)."""
    source_size: int = 1 << 20
    """Bytes the built-in ``source`` target sends when its spec has no ``:N``."""

    def validate(self) -> None:
        if self.max_client_frame < 1:
            raise ConfigurationError("max_client_frame must be at least 1 byte.")
        if not 1 <= self.server_frame_size <= 64 << 20:
            raise ConfigurationError("server_frame_size must be 1 byte .. 64 MiB.")
        if self.token_ttl <= 0:
            raise ConfigurationError("token_ttl must be positive (seconds).")
        for name in ("server_ping_interval", "idle_timeout"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigurationError(f"{name} must be positive or unset.")
        if self.source_size < 0:
            raise ConfigurationError("source_size must be >= 0.")


@dataclass
class EmulatorConfig:
    """Everything one emulator instance serves; see the module docstring for the TOML form."""

    bind: str = "127.0.0.1"
    allow_remote: bool = False
    port: int = 0
    arm_port: int = 0
    state_dir: Path | None = None
    insecure_http: bool = False
    subscription: str = DEFAULT_SUBSCRIPTION
    tenant: str = DEFAULT_TENANT
    omit_false_booleans: bool = False
    default_target: str | None = "echo"
    bastion: BastionConfig = field(default_factory=BastionConfig)
    extra_bastions: list[BastionConfig] = field(default_factory=list)
    targets: dict[str, str] = field(default_factory=dict)
    knobs: Knobs = field(default_factory=Knobs)
    faults: FaultConfig = field(default_factory=FaultConfig)
    network: dict[str, Any] = field(default_factory=dict)
    """The ``[network]`` table: VNets, NSGs, VMs (parsed by :mod:`bastion_fast.emulator.arm_network`)."""

    def all_bastions(self) -> list[BastionConfig]:
        """The default Bastion first, then the extra ones (the default one's port is ``port``)."""
        return [self.bastion, *self.extra_bastions]

    def validate(self) -> None:
        """Raise :class:`UsageError`/:class:`ConfigurationError` for anything that cannot work."""
        if not is_loopback(self.bind) and not self.allow_remote:
            raise UsageError(
                f"Refusing to bind the emulator to {self.bind}: it is not a loopback address.",
                hint="The emulator accepts any token; pass --allow-remote only on a network you trust.",
            )
        for port_name in ("port", "arm_port"):
            if not 0 <= getattr(self, port_name) <= 65535:
                raise ConfigurationError(f"{port_name} must be 0..65535.")
        self.knobs.validate()
        self.faults.validate()
        if self.network:
            from bastion_fast.emulator.arm_network import parse_network

            parse_network(self.network)
        seen: set[str] = set()
        for bastion in self.all_bastions():
            bastion.validate()
            key = f"{bastion.resource_group}/{bastion.name}".lower()
            if key in seen:
                raise ConfigurationError(f"Bastion {bastion.resource_group}/{bastion.name} is defined twice.")
            seen.add(key)
        from bastion_fast.emulator.targets import parse_target_spec

        for key, spec in self.targets.items():
            parse_target_spec(spec, where=f"[targets] {key!r}", source_size=self.knobs.source_size)
        if self.default_target:
            parse_target_spec(self.default_target, where="default_target", source_size=self.knobs.source_size)

    @classmethod
    def from_mapping(cls, data: dict[str, Any], *, where: str = "config") -> EmulatorConfig:
        """Build from a parsed TOML document (unknown keys raise :class:`ConfigurationError`)."""
        data = dict(data)
        cfg = cls()
        bastion = data.pop("bastion", None)
        bastions = data.pop("bastions", None)
        targets = data.pop("targets", None)
        knobs = data.pop("knobs", None)
        faults = data.pop("faults", None)
        network = data.pop("network", None)
        simple = {f.name for f in dataclasses.fields(cls)} - {
            "bastion", "extra_bastions", "targets", "knobs", "faults", "network",
        }
        for key, value in data.items():
            if key not in simple:
                raise ConfigurationError(f"{where}: unknown key {key!r}.",
                                         hint=f"Known keys: {', '.join(sorted(simple))}.")
            if key == "state_dir":
                setattr(cfg, key, Path(os.path.expanduser(str(value))))
            elif key == "default_target":
                setattr(cfg, key, str(value) or None)
            else:
                _check_type(where, key, value, getattr(cfg, key))
                setattr(cfg, key, value)
        if bastion is not None:
            cfg.bastion = _fill(BastionConfig(), _table(bastion, f"{where} [bastion]"), f"{where} [bastion]")
        if bastions is not None:
            if not isinstance(bastions, list):
                raise ConfigurationError(f"{where}: [[bastions]] must be an array of tables.")
            cfg.extra_bastions = [
                _fill(BastionConfig(), _table(b, f"{where} [[bastions]]"), f"{where} [[bastions]]") for b in bastions
            ]
        if targets is not None:
            table = _table(targets, f"{where} [targets]")
            cfg.targets = {str(k): str(v) for k, v in table.items()}
        if knobs is not None:
            cfg.knobs = _fill(Knobs(), _table(knobs, f"{where} [knobs]"), f"{where} [knobs]")
        if faults is not None:
            cfg.faults = FaultConfig.from_mapping(_table(faults, f"{where} [faults]"), where=f"{where} [faults]")
        if network is not None:
            cfg.network = _table(network, f"{where} [network]")
        return cfg


def load_toml(path: str | os.PathLike[str]) -> EmulatorConfig:
    """Read an emulator config file (TOML, via :mod:`tomllib`)."""
    import tomllib

    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigurationError(f"Cannot read the emulator config {os.fspath(path)}: {exc.strerror or exc}.",
                                 hint="Check the path given to --config.") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"The emulator config {os.fspath(path)} is not valid TOML: {exc}.") from exc
    return EmulatorConfig.from_mapping(data, where=os.fspath(path))


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and any 127.0.0.0/8 or ::1 literal."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigurationError(f"{where} must be a table.")
    return value


def _check_type(where: str, key: str, value: Any, default: Any) -> None:
    if default is None or value is None:
        return
    expected: type | tuple[type, ...] = type(default)
    if isinstance(default, float):
        expected = (int, float)
    if isinstance(default, tuple):
        expected = (list, tuple)
    if isinstance(default, Path):
        expected = (Path, str)
    if isinstance(default, bool) and not isinstance(value, bool):
        raise ConfigurationError(f"{where}: {key} must be true or false, got {value!r}.")
    if not isinstance(value, expected) or (isinstance(value, bool) and not isinstance(default, bool)):
        raise ConfigurationError(f"{where}: {key} has the wrong type ({type(value).__name__}).")


def _fill(obj: Any, data: dict[str, Any], where: str) -> Any:
    names = {f.name for f in dataclasses.fields(obj)}
    for key, raw in data.items():
        if key not in names:
            raise ConfigurationError(f"{where}: unknown key {key!r}.", hint=f"Known keys: {', '.join(sorted(names))}.")
        current = getattr(obj, key)
        _check_type(where, key, raw, current)
        value: Any = raw
        if isinstance(current, tuple):
            value = tuple(int(v) for v in raw)
        elif (current is None or isinstance(current, float)) and isinstance(raw, int) and not isinstance(raw, bool):
            value = float(raw)
        setattr(obj, key, value)
    return obj
