"""Network security group evaluation: would this NSG let this traffic through, and which ports does it open?

Theory of operation. Azure evaluates an NSG's rules for one direction in ascending priority; the first rule whose
protocol, ports and addresses match the packet decides (Allow or Deny), and the default rules (65000+) close the
list. We ask questions about *classes* of traffic ("TCP 443 from the Internet into AzureBastionSubnet"), not single
packets, so a rule can cover a class fully (``*``, the same service tag, a CIDR containing the subnet) or only
partly (a CIDR that overlaps it, e.g. "443 only from our office range"). Walking the rules in order:

* a rule that fully covers the class decides it — unless an earlier rule already decided part of it, in which case
  the answer is ``partial`` (some of the traffic passes, some does not);
* a rule that partly covers it is remembered and the walk goes on.

The hardening question ("which ports may the Bastion reach in the VNet?") is answered with port-interval sets:
each Allow adds the still-undecided part of its port range, each full-coverage rule removes its range from the
undecided set. The default AllowVnetOutBound rule is why an NSG without an explicit deny leaves every port open.

Service tags cannot be expanded offline (GatewayManager or AzureCloud are Microsoft-published IP lists), so a tag
covers only itself and ``*``/``Any``; CIDRs are compared with CIDRs and classified as private (VNet side) or public
(Internet side) otherwise. That is enough for the checks doctor makes and errs towards "partial", never "allowed".
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ALL_PORTS",
    "DEFAULT_RULES",
    "Endpoint",
    "PortSet",
    "Rule",
    "Verdict",
    "allowed_ports",
    "evaluate",
    "rules_of",
]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class PortSet:
    """A set of TCP/UDP ports as sorted, disjoint, inclusive intervals."""

    ranges: tuple[tuple[int, int], ...] = ()

    @classmethod
    def of(cls, *specs: str | int) -> PortSet:
        """Parse ``"*"``, ``"22"``, ``"8080-8090"`` (several specs are united)."""
        out: list[tuple[int, int]] = []
        for spec in specs:
            text = str(spec).strip()
            if text in {"*", "", "Any", "any"}:
                out.append((0, 65535))
            elif "-" in text:
                low, high = text.split("-", 1)
                out.append((int(low), int(high)))
            else:
                out.append((int(text), int(text)))
        return cls(_normalise(out))

    def __bool__(self) -> bool:
        return bool(self.ranges)

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and any(low <= port <= high for low, high in self.ranges)

    def __or__(self, other: PortSet) -> PortSet:
        return PortSet(_normalise([*self.ranges, *other.ranges]))

    def __and__(self, other: PortSet) -> PortSet:
        out = []
        for a_low, a_high in self.ranges:
            for b_low, b_high in other.ranges:
                low, high = max(a_low, b_low), min(a_high, b_high)
                if low <= high:
                    out.append((low, high))
        return PortSet(_normalise(out))

    def __sub__(self, other: PortSet) -> PortSet:
        out = list(self.ranges)
        for b_low, b_high in other.ranges:
            nxt = []
            for low, high in out:
                if b_high < low or b_low > high:
                    nxt.append((low, high))
                    continue
                if low < b_low:
                    nxt.append((low, b_low - 1))
                if high > b_high:
                    nxt.append((b_high + 1, high))
            out = nxt
        return PortSet(_normalise(out))

    def __str__(self) -> str:
        if self.ranges == ((0, 65535),):
            return "all ports"
        return ", ".join(str(low) if low == high else f"{low}-{high}" for low, high in self.ranges) or "none"


def _normalise(ranges: Iterable[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    merged: list[tuple[int, int]] = []
    for low, high in sorted(ranges):
        if merged and low <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    return tuple(merged)


ALL_PORTS = PortSet(((0, 65535),))


@dataclass(frozen=True)
class Endpoint:
    """One side of a traffic class: a service tag and/or an address range."""

    tag: str | None = None
    prefix: Network | None = None

    @classmethod
    def net(cls, tag: str, prefix: str | None) -> Endpoint:
        return cls(tag, ipaddress.ip_network(prefix, strict=False) if prefix else None)

    def __str__(self) -> str:
        if self.tag and self.prefix:
            return f"{self.tag} ({self.prefix})"
        return self.tag or str(self.prefix)


@dataclass(frozen=True)
class Rule:
    """One NSG security rule, reduced to what evaluation needs."""

    name: str
    priority: int
    direction: str  # "Inbound" | "Outbound"
    access: str  # "Allow" | "Deny"
    protocol: str
    sources: tuple[str, ...]
    destinations: tuple[str, ...]
    ports: PortSet
    default: bool = False

    @classmethod
    def from_arm(cls, raw: Mapping[str, Any], *, default: bool = False) -> Rule:
        """Build from the ARM JSON of a ``securityRules`` entry (``properties`` nested or flattened)."""
        props = raw.get("properties", raw)

        def many(single: str, plural: str) -> tuple[str, ...]:
            values = list(props.get(plural) or [])
            if props.get(single):
                values.append(props[single])
            for asg in props.get(single.replace("AddressPrefix", "ApplicationSecurityGroups"), None) or []:
                values.append(f"asg:{asg.get('id', '')}")
            return tuple(str(v) for v in values) or ("*",)

        port_specs = [*(props.get("destinationPortRanges") or [])]
        if props.get("destinationPortRange"):
            port_specs.append(props["destinationPortRange"])
        return cls(
            name=str(raw.get("name", "?")),
            priority=int(props.get("priority", 65500)),
            direction=str(props.get("direction", "Inbound")),
            access=str(props.get("access", "Deny")),
            protocol=str(props.get("protocol", "*")),
            sources=many("sourceAddressPrefix", "sourceAddressPrefixes"),
            destinations=many("destinationAddressPrefix", "destinationAddressPrefixes"),
            ports=PortSet.of(*port_specs) if port_specs else ALL_PORTS,
            default=default,
        )


_VNET = "VirtualNetwork"

# Azure's fixed default rules (name, priority, direction, access, source, destination), used when the NSG JSON
# does not list them.
DEFAULT_RULES = tuple(
    Rule(name, priority, direction, access, "*", (src,), (dst,), ALL_PORTS, default=True)
    for name, priority, direction, access, src, dst in (
        ("AllowVnetInBound", 65000, "Inbound", "Allow", _VNET, _VNET),
        ("AllowAzureLoadBalancerInBound", 65001, "Inbound", "Allow", "AzureLoadBalancer", "*"),
        ("DenyAllInBound", 65500, "Inbound", "Deny", "*", "*"),
        ("AllowVnetOutBound", 65000, "Outbound", "Allow", _VNET, _VNET),
        ("AllowInternetOutBound", 65001, "Outbound", "Allow", "*", "Internet"),
        ("DenyAllOutBound", 65500, "Outbound", "Deny", "*", "*"),
    )
)


def rules_of(nsg: Mapping[str, Any]) -> list[Rule]:
    """All rules of an NSG (its own and the defaults), sorted by priority."""
    props = nsg.get("properties", nsg)
    rules = [Rule.from_arm(r) for r in props.get("securityRules") or []]
    defaults = [Rule.from_arm(r, default=True) for r in props.get("defaultSecurityRules") or []]
    rules.extend(defaults or DEFAULT_RULES)
    return sorted(rules, key=lambda r: (r.priority, r.default))


_ANY = {"*", "any", "0.0.0.0/0", "::/0"}
# Address space a VNet can use (RFC 1918, shared 100.64/10, IPv6 ULA); everything else is the Internet side.
_VNET_RANGES = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
                                                       "100.64.0.0/10", "fc00::/7"))


def _cover(prefix: str, endpoint: Endpoint) -> str:
    """How ``prefix`` (one rule address) covers ``endpoint``: ``"full"``, ``"partial"`` or ``"none"``."""
    text = prefix.strip()
    low = text.lower()
    if low in _ANY:
        return "full"
    if low.startswith("asg:"):
        return "partial"  # application security groups: membership is per NIC; never assume full
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        # A service tag, possibly regional ("AzureCloud.westeurope").
        if endpoint.tag is None:
            return "none"
        base = low.split(".", 1)[0]
        if low == endpoint.tag.lower():
            return "full"
        return "partial" if base == endpoint.tag.lower() else "none"
    if endpoint.prefix is not None:
        if network.version != endpoint.prefix.version or not network.overlaps(endpoint.prefix):
            return "none"
        return "full" if endpoint.prefix.subnet_of(network) else "partial"  # type: ignore[arg-type]
    private = any(network.version == p.version and network.subnet_of(p) for p in _VNET_RANGES)  # type: ignore[arg-type]
    return "partial" if private == ((endpoint.tag or "").lower() == "virtualnetwork") else "none"


def _best(prefixes: Sequence[str], endpoint: Endpoint) -> str:
    covers = {_cover(p, endpoint) for p in prefixes}
    return "full" if "full" in covers else "partial" if "partial" in covers else "none"


def _protocol_matches(rule_protocol: str, protocol: str) -> bool:
    return rule_protocol.lower() in {"*", "any"} or rule_protocol.lower() == protocol.lower()


@dataclass
class Verdict:
    """The answer for one traffic class: ``allowed``, ``denied`` or ``partial``, and the rules that decided."""

    outcome: str
    rule: str | None = None
    partial_rules: list[str] = field(default_factory=list)

    @property
    def allowed(self) -> bool:
        return self.outcome == "allowed"


def evaluate(
    rules: Sequence[Rule], *, direction: str, protocol: str, port: int, source: Endpoint, destination: Endpoint
) -> Verdict:
    """Decide one traffic class against ``rules`` (see the module docstring)."""
    partial: list[Rule] = []
    for rule in rules:
        if rule.direction.lower() != direction.lower() or not _protocol_matches(rule.protocol, protocol):
            continue
        if port not in rule.ports:
            continue
        src, dst = _best(rule.sources, source), _best(rule.destinations, destination)
        if src == "none" or dst == "none":
            continue
        if src == "full" and dst == "full":
            outcome = "allowed" if rule.access.lower() == "allow" else "denied"
            if partial and any(p.access.lower() != rule.access.lower() for p in partial):
                outcome = "partial"
            return Verdict(outcome, rule.name, [p.name for p in partial])
        partial.append(rule)
    # No full match at all (cannot happen with the default rules present): whatever partly matched decides part.
    if any(p.access.lower() == "allow" for p in partial):
        return Verdict("partial", None, [p.name for p in partial])
    return Verdict("denied", None, [p.name for p in partial])


def allowed_ports(
    rules: Sequence[Rule], *, direction: str, protocol: str, source: Endpoint, destination: Endpoint
) -> tuple[PortSet, list[str]]:
    """The ports on which *some* traffic of this class may pass, and the Allow rules responsible.

    Partial Allows (e.g. toward one CIDR inside the VNet) count as open; only full-coverage rules close ports.
    """
    undecided = ALL_PORTS
    allowed = PortSet()
    responsible: list[str] = []
    for rule in rules:
        if rule.direction.lower() != direction.lower() or not _protocol_matches(rule.protocol, protocol):
            continue
        src, dst = _best(rule.sources, source), _best(rule.destinations, destination)
        if src == "none" or dst == "none":
            continue
        opened = undecided & rule.ports
        full = src == "full" and dst == "full"
        if rule.access.lower() == "allow" and opened:
            allowed = allowed | opened
            responsible.append(f"{rule.name} ({opened})")
        if full:
            undecided = undecided - rule.ports
        if not undecided:
            break
    return allowed, responsible
