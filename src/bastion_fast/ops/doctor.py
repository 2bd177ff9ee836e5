"""``doctor``: everything that would stop a connection through one Bastion, or weaken its security.

Theory of operation. The run is a pipeline of reads; each step adds findings and a failed read never stops the
run — it becomes a finding itself (``error`` when the same read would also break a real connection, e.g. no Reader
on the Bastion; ``unchecked`` when only doctor needed it):

1. caller side (``doctor_local``): proxy, CA bundle, local port, ssh/scp/RDP client;
2. the Bastion host (GET): SKU, provisioning state, native client, IP connect, DNS name — and the clock skew
   against the ``Date`` header of that very response;
3. the target, when one is given (IP connect rules, port);
4. the Bastion's virtual network and AzureBastionSubnet: the NSG rules Azure requires for Bastion to work
   (learn.microsoft.com "Working with NSG access and Azure Bastion") and the recommended hardening — outbound toward
   the VMs limited to 22/3389 (plus 8080/5701, Bastion's own data-plane ports);
5. every NIC in that VNet and in its peered VNets: VMs that still have public IPs, or whose NSGs let 22/3389 in
   from the Internet.

``fix_public_ips`` then disassociates the public IPs found in step 5 (never silently: the CLI shows the list and
asks first). The public IP resources themselves are left in place.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bastion_fast.control.models import TunnelTarget
from bastion_fast.ops import nsg
from bastion_fast.ops.arm import ArmFailure, BastionRef, arm_failure, parse_resource_id
from bastion_fast.ops.findings import DoctorReport, ExposedIp, Finding
from bastion_fast.ops.show import BastionView

__all__ = ["REQUIRED_RULES", "DoctorOptions", "fix_public_ips", "run_doctor"]

log = logging.getLogger("bastion_fast.ops.doctor")

BASTION_SUBNET = "AzureBastionSubnet"
SKEW_ERROR = 300.0  # Entra ID accepts tokens within 5 minutes of clock skew
SKEW_WARNING = 60.0
MAX_NICS = 1000
DATA_PLANE_PORTS = {8080, 5701}
TARGET_PORTS = {22, 3389}


@dataclass(frozen=True)
class Required:
    """One rule the AzureBastionSubnet NSG must allow (Azure's documented list)."""

    direction: str
    port: int
    peer: str  # service tag on the other side
    why: str

    @property
    def check(self) -> str:
        return f"nsg.{self.direction.lower()}.{self.port}.{self.peer.lower()}"


REQUIRED_RULES = (
    Required("Inbound", 443, "Internet", "clients (portal, native client, bastion-fast) reach the Bastion"),
    Required("Inbound", 443, "GatewayManager", "Azure's control plane manages the Bastion"),
    Required("Inbound", 8080, "VirtualNetwork", "Bastion instances talk to each other (data plane)"),
    Required("Inbound", 5701, "VirtualNetwork", "Bastion instances talk to each other (data plane)"),
    Required("Inbound", 443, "AzureLoadBalancer", "health probes of the Azure load balancer"),
    Required("Outbound", 22, "VirtualNetwork", "SSH to the target VMs"),
    Required("Outbound", 3389, "VirtualNetwork", "RDP to the target VMs"),
    Required("Outbound", 443, "AzureCloud", "diagnostics and metering to Azure"),
    Required("Outbound", 8080, "VirtualNetwork", "Bastion instances talk to each other (data plane)"),
    Required("Outbound", 5701, "VirtualNetwork", "Bastion instances talk to each other (data plane)"),
    Required("Outbound", 80, "Internet", "session and certificate validation"),
)


@dataclass
class DoctorOptions:
    """What to check beyond the Bastion itself."""

    target: TunnelTarget | None = None
    local_port: int | None = None
    ca_bundle: str | None = None
    check_caller: bool = True
    clock: Callable[[], float] = time.time


@dataclass
class _Run:
    arm: Any
    ref: BastionRef
    report: DoctorReport
    cache: dict[str, dict[str, Any] | ArmFailure] = field(default_factory=dict)
    semaphore: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(8))

    def add(self, *args: Any, **kwargs: Any) -> None:
        self.report.add(Finding(*args, **kwargs))

    async def get(self, resource_id: str) -> dict[str, Any] | ArmFailure:
        """GET a network resource by id (cached); failures are returned, not raised."""
        key = resource_id.lower()
        if key in self.cache:
            return self.cache[key]
        rid = parse_resource_id(resource_id)
        client = self.arm.client(rid.subscription)
        getters = {
            "virtualnetworks": client.virtual_networks.get,
            "networksecuritygroups": client.network_security_groups.get,
            "networkinterfaces": client.network_interfaces.get,
            "publicipaddresses": client.public_ip_addresses.get,
        }
        getter = getters[rid.type.lower()]
        async with self.semaphore:
            try:
                result: dict[str, Any] | ArmFailure = (await getter(rid.resource_group, rid.name)).as_dict()
            except Exception as exc:
                failure = arm_failure(exc)
                if failure is None:
                    raise
                result = failure
        self.cache[key] = result
        return result

    def read_failed(self, failure: ArmFailure, what: str, resource_id: str, *, needed_for_connection: bool,
                    area: str) -> None:
        name = resource_id.rstrip("/").rsplit("/", 1)[-1]
        if failure.forbidden:
            role = failure.missing_role()
            self.add(f"rbac.{what.replace(' ', '_')}", "Caller",
                     "error" if needed_for_connection else "unchecked",
                     f"Not allowed to read the {what} {name!r}: missing role {role.split(' (')[0]}",
                     failure.message,
                     f"az role assignment create --role \"{role.split(' (')[0]}\" --assignee YOU --scope "
                     f"{failure.scope or resource_id}")
        elif failure.not_found:
            self.add(f"{area.lower().replace(' ', '_')}.missing", area, "error",
                     f"The {what} {name!r} does not exist", resource_id)
        else:
            self.add(f"{area.lower().replace(' ', '_')}.unreadable", area, "unchecked",
                     f"Could not read the {what} {name!r}", f"{failure.code or failure.status}: {failure.message}")


async def run_doctor(arm: Any, ref: BastionRef, options: DoctorOptions | None = None) -> DoctorReport:
    """All checks for one Bastion (see the module docstring); never raises for what it finds."""
    options = options or DoctorOptions()
    report = DoctorReport(bastion=ref.id)
    run = _Run(arm, ref, report)
    if options.check_caller:
        from urllib.parse import urlsplit

        from bastion_fast.ops.doctor_local import local_findings

        arm_host = urlsplit(arm.base_url).hostname or arm.base_url
        for finding in await local_findings(arm_host=arm_host, ca_bundle=options.ca_bundle,
                                            port=options.local_port):
            report.add(finding)
    view = await _check_bastion(run, options)
    if view is None:
        return report
    if options.target is not None:
        _check_target_rules(run, view, options.target)
    await _check_network(run, view, options)
    return report


async def _check_bastion(run: _Run, options: DoctorOptions) -> BastionView | None:
    from bastion_fast.exceptions import AuthenticationError

    ref = run.ref
    area = "Bastion"
    try:
        host = await run.arm.client(ref.subscription).bastion_hosts.get(ref.resource_group, ref.name)
    except AuthenticationError as exc:
        run.add("caller.signin", "Caller", "error", "Could not sign in to Azure", str(exc), exc.hint)
        return None
    except Exception as exc:
        failure = arm_failure(exc)
        if failure is None:
            raise
        if failure.status == 401:
            run.add("caller.signin", "Caller", "error", "ARM refused the token", failure.message,
                    "Pass --tenant with the subscription's tenant and check --cloud.")
        elif failure.status is None:
            run.add("arm.unreachable", "Caller", "unchecked", "Azure Resource Manager did not answer",
                    failure.message, "Check network access to ARM, HTTPS_PROXY/NO_PROXY, --arm-endpoint and --cloud.")
        else:
            run.read_failed(failure, "Bastion host", ref.id, needed_for_connection=True, area=area)
        return None
    _check_clock(run, options)
    view = BastionView.from_arm(host.as_dict(), ref)
    args = ref.cli_args
    state = view.provisioning_state or "unknown"
    if state.lower() == "succeeded":
        run.add("bastion.state", area, "ok", "Provisioning state Succeeded")
    elif state.lower() == "failed":
        run.add("bastion.state", area, "error", "Provisioning state Failed: the last change did not complete",
                fix=f"Re-apply the change: bastion-fast bastion configure {args} …, or check the activity log.")
    else:
        run.add("bastion.state", area, "warning", f"Provisioning state {state}: an update is in progress",
                fix=f"Wait, then run bastion-fast doctor {args} again.")
    if view.developer:
        run.add("bastion.sku", area, "warning", f"{view.sku} SKU: only bastion-fast ssh works (no tunnel/rdp)",
                fix="Upgrade to Standard in the portal (needs an AzureBastionSubnet and a public IP).")
    elif view.rank < 2:
        run.add("bastion.sku", area, "error", f"{view.sku} SKU has no native client support",
                fix=f"bastion-fast bastion configure {args} --sku Standard --native-client true")
    else:
        run.add("bastion.sku", area, "ok", f"{view.sku} SKU")
        if view.features["nativeClient"]:
            run.add("bastion.native_client", area, "ok", "Native client support is on")
        else:
            run.add("bastion.native_client", area, "error", "Native client support (enableTunneling) is off",
                    fix=f"bastion-fast bastion configure {args} --native-client true")
        if view.features["ipConnect"]:
            run.add("bastion.ip_connect", area, "ok", "IP-based connection is on")
        else:
            run.add("bastion.ip_connect", area, "info", "IP-based connection is off (--target-ip-address refused)",
                    fix=f"bastion-fast bastion configure {args} --ip-connect true")
    if not view.dns_name:
        run.add("bastion.dns", area, "error", "The Bastion has no DNS name, so it cannot be reached",
                fix="It may still be deploying; check again in a few minutes.")
    return view


def _check_clock(run: _Run, options: DoctorOptions) -> None:
    server = getattr(run.arm, "server_date", None)
    seen_at = getattr(run.arm, "server_date_seen_at", None)
    if server is None or seen_at is None:
        run.add("caller.clock", "Caller", "unchecked", "Clock skew not checked: ARM sent no Date header")
        return
    # Compare at the moment the response arrived; the Date header has 1 s resolution.
    local = options.clock() - (time.time() - seen_at)
    skew = local - server.timestamp()
    if abs(skew) >= SKEW_ERROR:
        run.add("caller.clock", "Caller", "error", f"The local clock is {abs(skew):.0f} s "
                f"{'ahead of' if skew > 0 else 'behind'} Azure",
                "Tokens are refused when clocks differ by more than 5 minutes.",
                "Synchronise the clock (Windows: w32tm /resync; Linux: timedatectl set-ntp true; macOS: "
                "sntp -sS time.apple.com).")
    elif abs(skew) >= SKEW_WARNING:
        run.add("caller.clock", "Caller", "warning", f"The local clock is {abs(skew):.0f} s off Azure's",
                fix="Enable time synchronisation (NTP).")
    else:
        run.add("caller.clock", "Caller", "ok", f"Clock within {max(abs(skew), 1):.0f} s of Azure")


def _check_target_rules(run: _Run, view: BastionView, target: TunnelTarget) -> None:
    args = view.ref.cli_args
    if target.ip_address:
        if not view.features["ipConnect"]:
            run.add("target.ip_connect", "Target", "error",
                    f"--target-ip-address {target.ip_address} needs IP-based connection, which is off",
                    fix=f"bastion-fast bastion configure {args} --ip-connect true")
        if target.resource_port not in TARGET_PORTS:
            run.add("target.port", "Target", "error",
                    f"IP-based connection only reaches ports 22 and 3389, not {target.resource_port}",
                    fix="Target the VM by --target-resource-id for other ports (native client allows any port).")


def _subnet_of(vnet: dict[str, Any], name: str) -> dict[str, Any] | None:
    for subnet in (vnet.get("properties") or {}).get("subnets") or []:
        if str(subnet.get("name", "")).lower() == name.lower():
            result: dict[str, Any] = subnet
            return result
    return None


def _prefixes(subnet: dict[str, Any]) -> list[str]:
    props = subnet.get("properties") or {}
    out = list(props.get("addressPrefixes") or [])
    if props.get("addressPrefix"):
        out.insert(0, props["addressPrefix"])
    return out


async def _check_network(run: _Run, view: BastionView, options: DoctorOptions) -> None:
    if not view.vnet_id:
        run.add("network.vnet", "Network", "unchecked", "The Bastion names no virtual network; NSG and VM checks "
                "skipped")
        return
    vnet = await run.get(view.vnet_id)
    if isinstance(vnet, ArmFailure):
        run.read_failed(vnet, "virtual network", view.vnet_id, needed_for_connection=False, area="Network")
        return
    if not view.developer:
        await _check_bastion_subnet(run, view, vnet)
    vnets: list[tuple[str, dict[str, Any]]] = [(view.vnet_id, vnet)]
    complete = True
    for peering in (vnet.get("properties") or {}).get("virtualNetworkPeerings") or []:
        props = peering.get("properties") or {}
        remote = (props.get("remoteVirtualNetwork") or {}).get("id")
        if not remote:
            continue
        state = str(props.get("peeringState") or "Connected")
        if state.lower() != "connected":
            run.add("network.peering", "Network", "warning",
                    f"Peering {peering.get('name')!r} to {remote.rsplit('/', 1)[-1]} is {state}",
                    "VMs in that network are unreachable through the Bastion.",
                    "Re-create or sync the peering on both sides.")
            continue
        remote_vnet = await run.get(remote)
        if isinstance(remote_vnet, ArmFailure):
            run.read_failed(remote_vnet, "peered virtual network", remote, needed_for_connection=False,
                            area="Network")
            complete = False
            continue
        vnets.append((remote, remote_vnet))
    found_vms = await _check_vms(run, vnets)
    target = options.target
    if target is not None and target.resource_id:
        wanted = target.resource_id.rstrip("/").lower()
        if wanted in found_vms:
            run.add("target.reachable", "Target", "ok",
                    f"Target VM {wanted.rsplit('/', 1)[-1]} is in the Bastion's network "
                    f"({found_vms[wanted]})")
        else:
            run.add("target.reachable", "Target", "error" if complete else "unchecked",
                    f"Target VM {target.resource_id.rsplit('/', 1)[-1]} has no NIC in the Bastion's VNet or a "
                    "directly peered VNet",
                    "Bastion reaches VMs in its own VNet and in directly peered VNets only.",
                    "Peer the VM's virtual network with the Bastion's, or use a Bastion in the VM's network.")


async def _check_bastion_subnet(run: _Run, view: BastionView, vnet: dict[str, Any]) -> None:
    area = "AzureBastionSubnet"
    subnet = _subnet_of(vnet, BASTION_SUBNET)
    if subnet is None:
        run.add("subnet.missing", area, "error", f"The VNet {vnet.get('name')!r} has no AzureBastionSubnet",
                fix="Create a subnet named exactly AzureBastionSubnet (/26 or larger).")
        return
    prefixes = _prefixes(subnet)
    small = [p for p in prefixes if ipaddress.ip_network(p, strict=False).prefixlen > 26]
    if small:
        run.add("subnet.size", area, "warning", f"AzureBastionSubnet is {', '.join(small)} (smaller than /26)",
                "Scaling beyond 2 instances and newer features need a /26 or larger.",
                "Resize the subnet to /26 or larger.")
    nsg_id = ((subnet.get("properties") or {}).get("networkSecurityGroup") or {}).get("id")
    if not nsg_id:
        run.add("nsg.missing", area, "warning", "No NSG on AzureBastionSubnet: outbound toward VMs is not limited "
                "to 22/3389", fix="Attach an NSG with Azure's required Bastion rules and an outbound deny toward "
                "VirtualNetwork for other ports.")
        return
    group = await run.get(nsg_id)
    if isinstance(group, ArmFailure):
        run.read_failed(group, "network security group", nsg_id, needed_for_connection=False, area=area)
        return
    rules = nsg.rules_of(group)
    subnet_end = nsg.Endpoint.net("VirtualNetwork", prefixes[0] if prefixes else None)
    nsg_name = str(group.get("name") or nsg_id.rsplit("/", 1)[-1])
    rg = parse_resource_id(nsg_id).resource_group
    ok = 0
    for req in REQUIRED_RULES:
        peer = nsg.Endpoint(req.peer)
        src, dst = (peer, subnet_end) if req.direction == "Inbound" else (subnet_end, peer)
        verdict = nsg.evaluate(rules, direction=req.direction, protocol="Tcp", port=req.port, source=src,
                               destination=dst)
        way = "from" if req.direction == "Inbound" else "to"
        label = f"{req.direction} TCP {req.port} {way} {req.peer}"
        fix = (f"az network nsg rule create -g {rg} --nsg-name {nsg_name} -n Allow{req.peer}{req.port}"
               f"{req.direction} --priority <free, below {_priority(rules, verdict.rule)}> --direction "
               f"{req.direction} --access Allow --protocol Tcp "
               + (f"--source-address-prefixes {req.peer} --destination-port-ranges {req.port}"
                  if req.direction == "Inbound" else
                  f"--destination-address-prefixes {req.peer} --destination-port-ranges {req.port}"))
        if verdict.outcome == "allowed":
            ok += 1
        elif verdict.outcome == "partial":
            run.add(req.check, area, "warning", f"{label} is only partly allowed (needed: {req.why})",
                    f"Decided by {', '.join([*verdict.partial_rules, verdict.rule or ''])}".rstrip(", "), fix)
        else:
            run.add(req.check, area, "error", f"{label} is blocked (needed: {req.why})",
                    f"Blocked by rule {verdict.rule!r} in {nsg_name}.", fix)
    if ok == len(REQUIRED_RULES):
        run.add("nsg.required", area, "ok", f"NSG {nsg_name} allows every rule Azure requires for Bastion")
    vms = nsg.Endpoint("VirtualNetwork")
    opened, responsible = nsg.allowed_ports(rules, direction="Outbound", protocol="Tcp", source=subnet_end,
                                            destination=vms)
    extra = opened - nsg.PortSet.of(*(str(p) for p in sorted(TARGET_PORTS | DATA_PLANE_PORTS)))
    if extra:
        run.add("nsg.hardening", area, "warning",
                f"Outbound from the Bastion toward the VNet allows {extra}, not only 22/3389",
                "Allowed by " + "; ".join(responsible),
                f"az network nsg rule create -g {rg} --nsg-name {nsg_name} -n DenyVnetOutbound --priority 4000 "
                "--direction Outbound --access Deny --protocol '*' --destination-address-prefixes VirtualNetwork "
                "--destination-port-ranges '*' (keep the 22/3389/8080/5701 allow rules at lower priority numbers)")
    else:
        run.add("nsg.hardening", area, "ok", "Outbound toward VMs is limited to 22/3389 (and Bastion's 8080/5701)")


def _priority(rules: list[nsg.Rule], name: str | None) -> str:
    for rule in rules:
        if rule.name == name:
            return str(rule.priority)
    return "the blocking rule"


async def _check_vms(run: _Run, vnets: list[tuple[str, dict[str, Any]]]) -> dict[str, str]:
    """Public IPs and Internet-open 22/3389 on every VM NIC; returns {vm id lower: vnet name}."""
    area = "VMs"
    nic_subnets: dict[str, tuple[str, dict[str, Any]]] = {}
    skipped_vmss = 0
    for vnet_id, vnet in vnets:
        for subnet in (vnet.get("properties") or {}).get("subnets") or []:
            if str(subnet.get("name", "")).lower() in {BASTION_SUBNET.lower(), "gatewaysubnet"}:
                continue
            for ipconf in (subnet.get("properties") or {}).get("ipConfigurations") or []:
                conf_id = str(ipconf.get("id") or "")
                low = conf_id.lower()
                if "/microsoft.network/networkinterfaces/" not in low:
                    if "/virtualmachinescalesets/" in low:
                        skipped_vmss += 1
                    continue
                nic_id = conf_id[: low.index("/ipconfigurations/")] if "/ipconfigurations/" in low else conf_id
                nic_subnets.setdefault(nic_id.lower(), (nic_id, {"vnet": vnet_id, "subnet": subnet}))
    if skipped_vmss:
        run.add("vms.vmss", area, "info", f"{skipped_vmss} VM scale set instance NIC(s) not inspected")
    items = list(nic_subnets.values())[:MAX_NICS]
    if len(nic_subnets) > MAX_NICS:
        run.add("vms.limit", area, "unchecked", f"Only the first {MAX_NICS} of {len(nic_subnets)} NICs inspected")
    nics = await asyncio.gather(*(run.get(nic_id) for nic_id, _ in items))
    found: dict[str, str] = {}
    exposed_count = 0
    for (nic_id, where), nic in zip(items, nics, strict=True):
        if isinstance(nic, ArmFailure):
            run.read_failed(nic, "network interface", nic_id, needed_for_connection=False, area=area)
            continue
        props = nic.get("properties") or {}
        vm_id = (props.get("virtualMachine") or {}).get("id")
        if not vm_id:
            continue  # private endpoints, load balancer backends without a VM, detached NICs
        vm_name = vm_id.rstrip("/").rsplit("/", 1)[-1]
        found[vm_id.rstrip("/").lower()] = str(where["vnet"]).rsplit("/", 1)[-1]
        exposed_count += await _check_nic(run, vm_name, nic_id, nic)
    if found and not exposed_count:
        run.add("vms.exposure", area, "ok", f"None of the {len(found)} VM(s) in reach has a public IP or "
                "SSH/RDP open to the Internet")
    return found


async def _check_nic(run: _Run, vm_name: str, nic_id: str, nic: dict[str, Any]) -> int:
    area = "VMs"
    props = nic.get("properties") or {}
    nic_nsg_id = (props.get("networkSecurityGroup") or {}).get("id")
    exposures = 0
    for conf in props.get("ipConfigurations") or []:
        cprops = conf.get("properties") or {}
        private_ip = cprops.get("privateIPAddress")
        pip_id = (cprops.get("publicIPAddress") or {}).get("id")
        subnet_id = (cprops.get("subnet") or {}).get("id")
        address = None
        pip_sku = None
        if pip_id:
            pip = await run.get(pip_id)
            if isinstance(pip, ArmFailure):
                run.read_failed(pip, "public IP address", pip_id, needed_for_connection=False, area=area)
            else:
                address = (pip.get("properties") or {}).get("ipAddress")
                pip_sku = (pip.get("sku") or {}).get("name")
            run.report.exposed.append(ExposedIp(vm=vm_name, nic_id=nic_id, ip_configuration=str(conf.get("name")),
                                                public_ip_id=pip_id, address=address))
            exposures += 1
            run.add("vms.public_ip", area, "warning",
                    f"VM {vm_name} still has a public IP ({address or pip_id.rsplit('/', 1)[-1]})",
                    "With Bastion in place, a VM needs no public IP.",
                    "bastion-fast doctor … --fix-public-ips (asks before changing anything)")
        groups: list[list[nsg.Rule]] = []
        blind = False
        for group_id in (await _subnet_nsg(run, subnet_id), nic_nsg_id):
            if not group_id:
                continue
            group = await run.get(group_id)
            if isinstance(group, ArmFailure):
                run.read_failed(group, "network security group", group_id, needed_for_connection=False, area=area)
                blind = True
                continue
            groups.append(nsg.rules_of(group))
        if blind:
            continue
        dest = nsg.Endpoint.net("VirtualNetwork", f"{private_ip}/32" if private_ip else None)
        for port in sorted(TARGET_PORTS):
            if not groups:
                # No NSG at all: a Basic public IP is open, a Standard one is closed by default.
                open_ = bool(pip_id) and str(pip_sku or "Basic").lower() == "basic"
                rule = "no NSG on the subnet or NIC"
            else:
                verdicts = [nsg.evaluate(rules, direction="Inbound", protocol="Tcp", port=port,
                                         source=nsg.Endpoint("Internet"), destination=dest) for rules in groups]
                open_ = all(v.outcome != "denied" for v in verdicts)
                rule = ", ".join(v.rule or "/".join(v.partial_rules) for v in verdicts)
            if not open_:
                continue
            exposures += 1
            service = "SSH" if port == 22 else "RDP"
            if pip_id:
                run.add(f"vms.inbound.{port}", area, "error",
                        f"VM {vm_name}: {service} (TCP {port}) is open to the Internet on its public IP",
                        f"Allowed by {rule}.",
                        f"Delete that inbound rule (Bastion needs no inbound {port} from the Internet) and remove "
                        "the public IP (--fix-public-ips).")
            else:
                run.add(f"vms.inbound.{port}", area, "warning",
                        f"VM {vm_name}: NSG allows {service} (TCP {port}) from the Internet",
                        f"Allowed by {rule}; harmless only while the VM has no public IP.",
                        f"Delete the inbound rule allowing {port} from Internet/Any.")
    return exposures


async def _subnet_nsg(run: _Run, subnet_id: str | None) -> str | None:
    if not subnet_id or "/subnets/" not in subnet_id.lower():
        return None
    vnet_id = subnet_id[: subnet_id.lower().index("/subnets/")]
    vnet = await run.get(vnet_id)
    if isinstance(vnet, ArmFailure):
        return None
    subnet = _subnet_of(vnet, subnet_id.rstrip("/").rsplit("/", 1)[-1])
    if subnet is None:
        return None
    nsg_id: str | None = ((subnet.get("properties") or {}).get("networkSecurityGroup") or {}).get("id")
    return nsg_id


async def fix_public_ips(arm: Any, exposed: list[ExposedIp], *,
                         progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Disassociate each public IP from its NIC (a PUT of the NIC without it); one result per IP, never raises
    for ARM failures (they are reported per NIC)."""
    from azure.mgmt.network.models import NetworkInterface

    results: list[dict[str, Any]] = []
    by_nic: dict[str, list[ExposedIp]] = {}
    for item in exposed:
        by_nic.setdefault(item.nic_id, []).append(item)
    for nic_id, items in by_nic.items():
        rid = parse_resource_id(nic_id)
        client = arm.client(rid.subscription)
        try:
            nic = (await client.network_interfaces.get(rid.resource_group, rid.name)).as_dict()
            wanted = {i.public_ip_id.lower() for i in items}
            for conf in (nic.get("properties") or {}).get("ipConfigurations") or []:
                cprops = conf.get("properties") or {}
                if str((cprops.get("publicIPAddress") or {}).get("id", "")).lower() in wanted:
                    cprops.pop("publicIPAddress", None)
            if progress is not None:
                progress(f"Updating NIC {rid.name}")
            poller = await client.network_interfaces.begin_create_or_update(rid.resource_group, rid.name,
                                                                            NetworkInterface(nic))
            await poller.result()
        except Exception as exc:
            failure = arm_failure(exc)
            if failure is None:
                raise
            results.extend({**i.to_json(), "ok": False, "error": f"{failure.code or failure.status}: "
                            f"{failure.message}"} for i in items)
            continue
        results.extend({**i.to_json(), "ok": True} for i in items)
    return results
