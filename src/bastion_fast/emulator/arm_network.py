"""The emulator's network graph: VNets and subnets (AzureBastionSubnet included), NSGs with rules, NICs, public
IPs and VMs — served as ARM resources so ``doctor`` and ``--fix-public-ips`` run through azure-mgmt-network.

Configured under ``[network]`` in the emulator's TOML (every key optional)::

    [network]
    lro_polls = 2          # status polls before a long-running update completes
    lro_interval = 0.05    # seconds the client is told to wait between polls
    forbidden = []         # resource ids whose GET answers 403 AuthorizationFailed (a missing Reader role)

    [[network.vnets]]      # the Bastion's own VNet is "vnet-<bastion name>"; defined here it replaces the default
    name = "vnet-spoke"
    resource_group = "rg-emulator"      # default: the default Bastion's group
    address_space = ["10.1.0.0/16"]
    peer_with = ["vnet-bastion-emulator"]   # names (same group) or ids; peerings appear on both sides
      [[network.vnets.subnets]]
      name = "default"
      prefix = "10.1.0.0/24"
      nsg = "nsg-spoke"                 # optional

    [[network.nsgs]]
    name = "nsg-spoke"
      [[network.nsgs.rules]]
      name = "AllowSshFromInternet"
      priority = 100
      direction = "Inbound"             # Inbound | Outbound
      access = "Allow"                  # Allow | Deny
      protocol = "Tcp"                  # Tcp | Udp | Icmp | *
      source = "Internet"               # prefix, tag or a list of them (default "*")
      destination = "*"
      ports = "22"                      # "22", "8080-8090", "*" or a list

    [[network.vms]]
    name = "vm1"
    vnet = "vnet-spoke"                 # default: the default Bastion's VNet
    subnet = "default"
    private_ip = "10.1.0.4"             # default: the next free address of the subnet
    public_ip = "20.30.40.50"           # optional: creates pip-<vm> and associates it
    public_ip_sku = "Standard"
    nsg = "nsg-vm1"                     # optional NIC-level NSG

Without ``[network]`` each Bastion gets ``vnet-<name>`` (10.<i>.0.0/16) with ``AzureBastionSubnet``
(10.<i>.254.0/26, no NSG) and ``default`` (10.<i>.0.0/24), and every VM id in ``[targets]`` becomes a VM with a NIC
in that ``default`` subnet, so ``doctor`` and ``links create`` have something to look at.

Routes: GET of each resource (and the list in a resource group), GET of one subnet, PUT of a network interface (a
long-running operation, used to disassociate public IPs). Back-references (a subnet's ``ipConfigurations``, a public
IP's ``ipConfiguration``) are computed on every GET from the NICs, so they are never stale.
"""

from __future__ import annotations

import copy
import ipaddress
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from bastion_fast.emulator.arm import (
    STATE_KEY,
    ArmState,
    arm_error,
    arm_path,
    json_object_body,
    parse_resource_id,
)
from bastion_fast.emulator.arm_lro import operations
from bastion_fast.emulator.auth import user_of
from bastion_fast.exceptions import ConfigurationError

__all__ = ["NetworkConfig", "build_network", "parse_network", "register"]

log = logging.getLogger("bastion_fast.emulator.arm_network")

NET = "Microsoft.Network"
TYPES = {
    "virtualnetworks": f"{NET}/virtualNetworks",
    "networksecuritygroups": f"{NET}/networkSecurityGroups",
    "networkinterfaces": f"{NET}/networkInterfaces",
    "publicipaddresses": f"{NET}/publicIPAddresses",
}
VM_TYPE = "Microsoft.Compute/virtualMachines"


# -- configuration ----------------------------------------------------------------------------------------------


@dataclass
class SubnetSpec:
    name: str
    prefix: str
    nsg: str | None = None


@dataclass
class VnetSpec:
    name: str
    resource_group: str | None = None
    address_space: list[str] = field(default_factory=list)
    peer_with: list[str] = field(default_factory=list)
    subnets: list[SubnetSpec] = field(default_factory=list)


@dataclass
class NsgSpec:
    name: str
    resource_group: str | None = None
    rules: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class VmSpec:
    name: str
    resource_group: str | None = None
    vnet: str | None = None
    subnet: str = "default"
    private_ip: str | None = None
    public_ip: str | None = None
    public_ip_sku: str = "Standard"
    nsg: str | None = None


@dataclass
class NetworkConfig:
    """The parsed ``[network]`` table."""

    lro_polls: int = 2
    lro_interval: float = 0.05
    forbidden: list[str] = field(default_factory=list)
    vnets: list[VnetSpec] = field(default_factory=list)
    nsgs: list[NsgSpec] = field(default_factory=list)
    vms: list[VmSpec] = field(default_factory=list)


_RULE_KEYS = {"name", "priority", "direction", "access", "protocol", "source", "destination", "ports"}


def _keys(table: Any, allowed: set[str], where: str, required: tuple[str, ...] = ()) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise ConfigurationError(f"{where} must be a table.")
    unknown = set(table) - allowed
    if unknown:
        raise ConfigurationError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}.",
                                 hint=f"Known keys: {', '.join(sorted(allowed))}.")
    for key in required:
        if not table.get(key):
            raise ConfigurationError(f"{where}: {key!r} is required.")
    return table


def _list(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]


def parse_network(data: dict[str, Any] | None, where: str = "[network]") -> NetworkConfig:
    """Validate and parse the ``[network]`` table (``ConfigurationError`` names the bad key)."""
    cfg = NetworkConfig()
    if not data:
        return cfg
    table = _keys(data, {"lro_polls", "lro_interval", "forbidden", "vnets", "nsgs", "vms"}, where)
    cfg.lro_polls = int(table.get("lro_polls", cfg.lro_polls))
    cfg.lro_interval = float(table.get("lro_interval", cfg.lro_interval))
    if cfg.lro_polls < 1 or cfg.lro_interval <= 0:
        raise ConfigurationError(f"{where}: lro_polls must be ≥ 1 and lro_interval > 0.")
    cfg.forbidden = _list(table.get("forbidden"))
    for i, raw in enumerate(table.get("vnets") or []):
        w = f"{where} vnets[{i}]"
        v = _keys(raw, {"name", "resource_group", "address_space", "peer_with", "subnets"}, w, ("name",))
        subnets = []
        for j, raw_subnet in enumerate(v.get("subnets") or []):
            s = _keys(raw_subnet, {"name", "prefix", "nsg"}, f"{w} subnets[{j}]", ("name", "prefix"))
            try:
                ipaddress.ip_network(str(s["prefix"]), strict=False)
            except ValueError as exc:
                raise ConfigurationError(f"{w} subnets[{j}]: {exc}.") from None
            subnets.append(SubnetSpec(str(s["name"]), str(s["prefix"]), s.get("nsg")))
        cfg.vnets.append(VnetSpec(str(v["name"]), v.get("resource_group"), _list(v.get("address_space")),
                                  _list(v.get("peer_with")), subnets))
    for i, raw in enumerate(table.get("nsgs") or []):
        w = f"{where} nsgs[{i}]"
        n = _keys(raw, {"name", "resource_group", "rules"}, w, ("name",))
        rules = [_keys(r, _RULE_KEYS, f"{w} rules[{j}]", ("name", "priority", "direction", "access"))
                 for j, r in enumerate(n.get("rules") or [])]
        cfg.nsgs.append(NsgSpec(str(n["name"]), n.get("resource_group"), rules))
    for i, raw in enumerate(table.get("vms") or []):
        w = f"{where} vms[{i}]"
        v = _keys(raw, {"name", "resource_group", "vnet", "subnet", "private_ip", "public_ip", "public_ip_sku",
                        "nsg"}, w, ("name",))
        cfg.vms.append(VmSpec(str(v["name"]), v.get("resource_group"), v.get("vnet"), str(v.get("subnet", "default")),
                              v.get("private_ip"), v.get("public_ip"), str(v.get("public_ip_sku", "Standard")),
                              v.get("nsg")))
    return cfg


# -- building the resources -------------------------------------------------------------------------------------


def _etag() -> str:
    return f'W/"{uuid.uuid4()}"'


class _Builder:
    def __init__(self, state: ArmState, default_rg: str, location: str) -> None:
        self.state = state
        self.sub = state.subscription
        self.rg = default_rg
        self.location = location

    def rid(self, kind: str, name_or_id: str, rg: str | None = None, provider: str = NET) -> str:
        if name_or_id.startswith("/subscriptions/"):
            return name_or_id
        return f"/subscriptions/{self.sub}/resourceGroups/{rg or self.rg}/providers/{provider}/{kind}/{name_or_id}"

    def base(self, rid: str, rtype: str) -> dict[str, Any]:
        return {"id": rid, "name": rid.rsplit("/", 1)[-1], "type": rtype, "location": self.location,
                "etag": _etag(), "tags": {}}

    def nsg(self, spec: NsgSpec) -> None:
        rid = self.rid("networkSecurityGroups", spec.name, spec.resource_group)
        resource = self.base(rid, TYPES["networksecuritygroups"])
        rules = []
        for rule in spec.rules:
            ports = _list(rule.get("ports") or "*")
            sources = _list(rule.get("source") or "*")
            dests = _list(rule.get("destination") or "*")
            props: dict[str, Any] = {
                "protocol": str(rule.get("protocol", "*")),
                "sourcePortRange": "*",
                "access": str(rule["access"]),
                "priority": int(rule["priority"]),
                "direction": str(rule["direction"]),
                "provisioningState": "Succeeded",
            }
            props.update({"destinationPortRange": ports[0]} if len(ports) == 1 else {"destinationPortRanges": ports})
            props.update({"sourceAddressPrefix": sources[0]} if len(sources) == 1
                         else {"sourceAddressPrefixes": sources})
            props.update({"destinationAddressPrefix": dests[0]} if len(dests) == 1
                         else {"destinationAddressPrefixes": dests})
            rules.append({"id": f"{rid}/securityRules/{rule['name']}", "name": str(rule["name"]),
                          "type": f"{NET}/networkSecurityGroups/securityRules", "properties": props})
        resource["properties"] = {"provisioningState": "Succeeded", "securityRules": rules,
                                  "defaultSecurityRules": _default_rules(rid)}
        self.state.put(resource)

    def vnet(self, spec: VnetSpec) -> str:
        rid = self.rid("virtualNetworks", spec.name, spec.resource_group)
        resource = self.base(rid, TYPES["virtualnetworks"])
        subnets = []
        for s in spec.subnets:
            props: dict[str, Any] = {"addressPrefix": s.prefix, "provisioningState": "Succeeded"}
            if s.nsg:
                props["networkSecurityGroup"] = {"id": self.rid("networkSecurityGroups", s.nsg,
                                                               spec.resource_group)}
            subnets.append({"id": f"{rid}/subnets/{s.name}", "name": s.name,
                            "type": f"{NET}/virtualNetworks/subnets", "etag": _etag(), "properties": props})
        space = spec.address_space or sorted({str(ipaddress.ip_network(s.prefix, strict=False).supernet(
            new_prefix=16)) for s in spec.subnets})
        resource["properties"] = {"provisioningState": "Succeeded", "addressSpace": {"addressPrefixes": space},
                                  "subnets": subnets, "virtualNetworkPeerings": []}
        self.state.put(resource)
        return rid

    def peer(self, a: str, b: str) -> None:
        for local, remote in ((a, b), (b, a)):
            vnet = self.state.get(local)
            if vnet is None or self.state.get(remote) is None:
                raise ConfigurationError(f"[network] peer_with: no VNet {remote.rsplit('/', 1)[-1]!r}.")
            peerings = vnet["properties"]["virtualNetworkPeerings"]
            if any(p["properties"]["remoteVirtualNetwork"]["id"].lower() == remote.lower() for p in peerings):
                continue
            name = f"peer-to-{remote.rsplit('/', 1)[-1]}"
            peerings.append({"id": f"{local}/virtualNetworkPeerings/{name}", "name": name,
                             "type": f"{NET}/virtualNetworks/virtualNetworkPeerings",
                             "properties": {"peeringState": "Connected", "peeringSyncLevel": "FullyInSync",
                                            "allowVirtualNetworkAccess": True, "provisioningState": "Succeeded",
                                            "remoteVirtualNetwork": {"id": remote}}})

    def vm(self, spec: VmSpec, default_vnet: str) -> None:
        vnet_id = self.rid("virtualNetworks", spec.vnet, spec.resource_group) if spec.vnet else default_vnet
        vnet = self.state.get(vnet_id)
        if vnet is None:
            raise ConfigurationError(f"[network] VM {spec.name!r}: no VNet {vnet_id.rsplit('/', 1)[-1]!r}.")
        subnet = next((s for s in vnet["properties"]["subnets"] if s["name"].lower() == spec.subnet.lower()), None)
        if subnet is None:
            raise ConfigurationError(f"[network] VM {spec.name!r}: VNet {vnet['name']!r} has no subnet "
                                     f"{spec.subnet!r}.")
        rg = spec.resource_group
        vm_id = self.rid("virtualMachines", spec.name, rg, provider="Microsoft.Compute")
        nic_id = self.rid("networkInterfaces", f"{spec.name}-nic", rg)
        ip = spec.private_ip or self._next_ip(subnet)
        conf_props: dict[str, Any] = {"privateIPAddress": ip, "privateIPAllocationMethod": "Static" if
                                      spec.private_ip else "Dynamic", "subnet": {"id": subnet["id"]},
                                      "primary": True, "provisioningState": "Succeeded"}
        if spec.public_ip:
            pip_id = self.rid("publicIPAddresses", f"pip-{spec.name}", rg)
            pip = self.base(pip_id, TYPES["publicipaddresses"])
            pip["sku"] = {"name": spec.public_ip_sku, "tier": "Regional"}
            pip["properties"] = {"ipAddress": spec.public_ip, "publicIPAllocationMethod": "Static",
                                 "publicIPAddressVersion": "IPv4", "provisioningState": "Succeeded"}
            self.state.put(pip)
            conf_props["publicIPAddress"] = {"id": pip_id}
        nic = self.base(nic_id, TYPES["networkinterfaces"])
        nic_props: dict[str, Any] = {
            "provisioningState": "Succeeded",
            "ipConfigurations": [{"id": f"{nic_id}/ipConfigurations/ipconfig1", "name": "ipconfig1",
                                  "type": f"{NET}/networkInterfaces/ipConfigurations", "properties": conf_props}],
            "virtualMachine": {"id": vm_id},
            "primary": True,
        }
        if spec.nsg:
            nic_props["networkSecurityGroup"] = {"id": self.rid("networkSecurityGroups", spec.nsg, rg)}
        nic["properties"] = nic_props
        self.state.put(nic)
        vm = self.base(vm_id, VM_TYPE)
        vm["properties"] = {"provisioningState": "Succeeded",
                            "networkProfile": {"networkInterfaces": [{"id": nic_id, "properties": {"primary": True}}]}}
        self.state.put(vm)

    def _next_ip(self, subnet: dict[str, Any]) -> str:
        network = ipaddress.ip_network(subnet["properties"]["addressPrefix"], strict=False)
        used = {str(c["properties"].get("privateIPAddress")) for n in self.state.list(TYPES["networkinterfaces"],
                                                                                           self.sub)
                for c in n["properties"]["ipConfigurations"]}
        for offset, host in enumerate(network.hosts()):
            if offset >= 3 and str(host) not in used:  # Azure reserves .1-.3
                return str(host)
        raise ConfigurationError(f"[network] subnet {subnet['name']!r} is full.")


def _default_rules(nsg_id: str) -> list[dict[str, Any]]:
    table = (
        ("AllowVnetInBound", 65000, "Inbound", "Allow", "VirtualNetwork", "VirtualNetwork"),
        ("AllowAzureLoadBalancerInBound", 65001, "Inbound", "Allow", "AzureLoadBalancer", "*"),
        ("DenyAllInBound", 65500, "Inbound", "Deny", "*", "*"),
        ("AllowVnetOutBound", 65000, "Outbound", "Allow", "VirtualNetwork", "VirtualNetwork"),
        ("AllowInternetOutBound", 65001, "Outbound", "Allow", "*", "Internet"),
        ("DenyAllOutBound", 65500, "Outbound", "Deny", "*", "*"),
    )
    return [{"id": f"{nsg_id}/defaultSecurityRules/{name}", "name": name,
             "type": f"{NET}/networkSecurityGroups/defaultSecurityRules",
             "properties": {"protocol": "*", "sourcePortRange": "*", "destinationPortRange": "*",
                            "sourceAddressPrefix": src, "destinationAddressPrefix": dst, "access": access,
                            "priority": priority, "direction": direction, "provisioningState": "Succeeded"}}
            for name, priority, direction, access, src, dst in table]


def build_network(state: ArmState, runtime: Any, cfg: NetworkConfig) -> None:
    """Create every configured resource (plus the defaults described in the module docstring) in ``state``."""
    config = getattr(runtime, "config", None)
    bastions = [b.cfg for b in getattr(runtime, "bastions", [])]
    if not bastions:
        return
    default = bastions[0]
    builder = _Builder(state, default.resource_group, default.location)
    for nsg_spec in cfg.nsgs:
        builder.nsg(nsg_spec)
    names = {builder.rid("virtualNetworks", v.name, v.resource_group).lower() for v in cfg.vnets}
    for index, bastion in enumerate(bastions):
        vnet_id = builder.rid("virtualNetworks", f"vnet-{bastion.name}", bastion.resource_group)
        if vnet_id.lower() not in names:
            names.add(vnet_id.lower())
            builder.vnet(VnetSpec(f"vnet-{bastion.name}", bastion.resource_group, [f"10.{index}.0.0/16"], [], [
                SubnetSpec("AzureBastionSubnet", f"10.{index}.254.0/26"),
                SubnetSpec("default", f"10.{index}.0.0/24"),
            ]))
        if bastion.sku != "Developer":
            pip_id = builder.rid("publicIPAddresses", f"pip-{bastion.name}", bastion.resource_group)
            if state.get(pip_id) is None:
                pip = builder.base(pip_id, TYPES["publicipaddresses"])
                pip["sku"] = {"name": "Standard", "tier": "Regional"}
                pip["properties"] = {"ipAddress": f"203.0.113.{10 + index}", "publicIPAllocationMethod": "Static",
                                     "provisioningState": "Succeeded"}
                state.put(pip)
    for spec in cfg.vnets:
        builder.vnet(spec)
    for spec in cfg.vnets:
        a = builder.rid("virtualNetworks", spec.name, spec.resource_group)
        for other in spec.peer_with:
            builder.peer(a, builder.rid("virtualNetworks", other, spec.resource_group))
    default_vnet = builder.rid("virtualNetworks", f"vnet-{default.name}", default.resource_group)
    for vm in cfg.vms:
        builder.vm(vm, default_vnet)
    # VMs named in [targets] exist too, in the default Bastion's "default" subnet.
    known = {r["id"].lower() for r in state.list(VM_TYPE, state.subscription)}
    for key in getattr(config, "targets", {}) or {}:
        vm_id = key.split(":", 1)[0] if key.count(":") == 1 else key
        parts = parse_resource_id(vm_id)
        if (parts.get("virtualmachines") and "virtualmachinescalesets" not in parts
                and parts.get("subscriptions", "").lower() == state.subscription.lower()
                and vm_id.lower() not in known):
            vnet = state.get(default_vnet)
            if vnet is None or not any(s["name"] == "default" for s in vnet["properties"]["subnets"]):
                continue
            builder.vm(VmSpec(parts["virtualmachines"], parts.get("resourcegroups")), default_vnet)
            known.add(vm_id.lower())


# -- routes -----------------------------------------------------------------------------------------------------

_RG = "/subscriptions/{subscription}/resourceGroups/{resourceGroup}/providers"
FORBIDDEN_KEY = web.AppKey("bastion_fast_arm_forbidden", set)


def _render(state: ArmState, resource: dict[str, Any]) -> dict[str, Any]:
    """The resource with back-references computed from the NICs."""
    out = state.render(resource)
    rtype = str(resource.get("type", "")).lower()
    if rtype == TYPES["virtualnetworks"].lower():
        confs = _ip_configurations(state)
        for subnet in out["properties"].get("subnets", []):
            refs = [{"id": c["id"]} for c in confs if c["properties"]["subnet"]["id"].lower() == subnet["id"].lower()]
            if refs:
                subnet["properties"]["ipConfigurations"] = refs
    elif rtype == TYPES["publicipaddresses"].lower():
        for conf in _ip_configurations(state):
            pip = (conf["properties"].get("publicIPAddress") or {}).get("id", "")
            if pip.lower() == resource["id"].lower():
                out["properties"]["ipConfiguration"] = {"id": conf["id"]}
    return out


def _ip_configurations(state: ArmState) -> list[dict[str, Any]]:
    return [c for n in state.list(TYPES["networkinterfaces"], state.subscription)
            for c in n["properties"].get("ipConfigurations", [])]


def _forbidden(request: web.Request, resource_id: str, action: str) -> web.Response | None:
    if resource_id.lower() not in request.app[FORBIDDEN_KEY]:
        return None
    header = request.headers.get("Authorization", "")
    user = user_of(header.partition(" ")[2])
    return arm_error(
        403, "AuthorizationFailed",
        f"The client '{user}' with object id '{uuid.uuid5(uuid.NAMESPACE_URL, user)}' does not have authorization "
        f"to perform action '{action}' over scope '{resource_id}' or the scope is invalid. If access was recently "
        "granted, please refresh your credentials.",
    )


def _resource_id(request: web.Request, provider_type: str) -> str:
    info = request.match_info
    return f"/subscriptions/{info['subscription']}/resourceGroups/{info['resourceGroup']}/providers/" \
           f"{provider_type}/{info['name']}"


def _getter(provider_type: str) -> Any:
    async def get(request: web.Request) -> web.Response:
        state = request.app[STATE_KEY]
        rid = _resource_id(request, provider_type)
        denied = _forbidden(request, rid, f"{provider_type}/read")
        if denied is not None:
            return denied
        resource = state.get(rid)
        if resource is None:
            if request.match_info["resourceGroup"].lower() not in state.resource_groups:
                return arm_error(404, "ResourceGroupNotFound",
                                 f"Resource group '{request.match_info['resourceGroup']}' could not be found.")
            return arm_error(404, "ResourceNotFound",
                             f"The Resource '{provider_type}/{request.match_info['name']}' under resource group "
                             f"'{request.match_info['resourceGroup']}' was not found.")
        return web.json_response(_render(state, resource))

    return get


def _lister(provider_type: str) -> Any:
    async def list_(request: web.Request) -> web.Response:
        state = request.app[STATE_KEY]
        info = request.match_info
        items = [_render(state, r) for r in state.list(provider_type, info["subscription"], info["resourceGroup"])
                 if r["id"].lower() not in request.app[FORBIDDEN_KEY]]
        return web.json_response({"value": items})

    return list_


async def get_subnet(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    info = request.match_info
    vnet_id = (f"/subscriptions/{info['subscription']}/resourceGroups/{info['resourceGroup']}/providers/"
               f"{NET}/virtualNetworks/{info['vnet']}")
    denied = _forbidden(request, vnet_id, f"{NET}/virtualNetworks/subnets/read")
    if denied is not None:
        return denied
    vnet = state.get(vnet_id)
    if vnet is not None:
        for subnet in _render(state, vnet)["properties"]["subnets"]:
            if subnet["name"].lower() == info["name"].lower():
                return web.json_response(subnet)
    return arm_error(404, "NotFound", f"Resource {vnet_id}/subnets/{info['name']} not found.")


async def put_network_interface(request: web.Request) -> web.Response:
    """PUT an existing NIC: public IP and NSG associations follow the body; everything else is kept."""
    state = request.app[STATE_KEY]
    rid = _resource_id(request, f"{NET}/networkInterfaces")
    denied = _forbidden(request, rid, f"{NET}/networkInterfaces/write")
    if denied is not None:
        return denied
    current = state.get(rid)
    if current is None:
        return arm_error(400, "UnsupportedOperation", "The emulator cannot create network interfaces; define "
                         "VMs under [network] in its config.")
    if current["properties"].get("provisioningState") == "Updating":
        return arm_error(409, "AnotherOperationInProgress",
                         f"Another operation on this or dependent resource is in progress: {rid}.")
    body = await json_object_body(request)
    if isinstance(body, web.Response):
        return body
    wanted = {str(c.get("name", "")).lower(): (c.get("properties") or {})
              for c in (body.get("properties") or {}).get("ipConfigurations") or []}
    updated = copy.deepcopy(current)
    for conf in updated["properties"]["ipConfigurations"]:
        props = wanted.get(conf["name"].lower())
        if props is None:
            continue
        pip = (props.get("publicIPAddress") or {}).get("id")
        if pip:
            if state.get(pip) is None:
                return arm_error(400, "InvalidResourceReference", f"Resource {pip} referenced by {rid} was not "
                                 "found.")
            conf["properties"]["publicIPAddress"] = {"id": pip}
        else:
            conf["properties"].pop("publicIPAddress", None)
    nsg_ref = ((body.get("properties") or {}).get("networkSecurityGroup") or {}).get("id")
    if nsg_ref:
        updated["properties"]["networkSecurityGroup"] = {"id": nsg_ref}
    else:
        updated["properties"].pop("networkSecurityGroup", None)
    updated["properties"]["provisioningState"] = "Updating"
    updated["etag"] = _etag()
    state.put(updated)

    def complete() -> None:
        updated["properties"]["provisioningState"] = "Succeeded"
        log.info("NIC %s updated", rid)

    ops = operations(request.app)
    op = ops.start(updated.get("location", ""), complete)
    return web.json_response(state.render(updated),
                             headers=ops.headers(request, request.match_info["subscription"], op, location=False))


def register(app: web.Application, state: ArmState) -> None:
    """Build the graph from the emulator config (``[network]``) and add the network routes."""
    runtime = state.sessions
    config = getattr(runtime, "config", None)
    cfg = parse_network(getattr(config, "network", None) or None)
    operations(app, polls=cfg.lro_polls, interval=cfg.lro_interval)
    app[FORBIDDEN_KEY] = {f.lower() for f in cfg.forbidden}
    build_network(state, runtime, cfg)
    for segment, provider_type in (("virtualNetworks", f"{NET}/virtualNetworks"),
                                   ("networkSecurityGroups", f"{NET}/networkSecurityGroups"),
                                   ("networkInterfaces", f"{NET}/networkInterfaces"),
                                   ("publicIPAddresses", f"{NET}/publicIPAddresses"),
                                   ("virtualMachines", VM_TYPE)):
        path = f"{_RG}/{provider_type.split('/')[0]}/{segment}"
        app.router.add_get(arm_path(path), _lister(provider_type))
        app.router.add_get(arm_path(path + "/{name}"), _getter(provider_type))
    app.router.add_get(arm_path(f"{_RG}/{NET}/virtualNetworks/{{vnet}}/subnets/{{name}}"), get_subnet)
    app.router.add_put(arm_path(f"{_RG}/{NET}/networkInterfaces/{{name}}"), put_network_interface)
