"""``bastion-fast cp``: copy files to and from a VM with the user's OpenSSH, over an in-process tunnel.

    bastion-fast cp [-r] SRC... [USER@]TARGET:DEST        upload
    bastion-fast cp [-r] [USER@]TARGET:SRC... DEST        download

``TARGET`` is a profile name, or any label when the target is given with ``--target-resource-id`` /
``--target-ip-address``. The user's keys, agent and ``~/.ssh/config`` keep working because OpenSSH does the copying.

Theory of operation:

1. Resolve the target, open a tunnel on a free loopback port, pin the host key (as ``ssh`` does).
2. On Unix, start one OpenSSH *master* connection (``ControlMaster``): the user authenticates once (password, key
   passphrase or Entra ID certificate) and every later step — size query, the copy, resume checks, checksums —
   rides that one SSH connection and one Bastion session. (Windows' OpenSSH has no multiplexing: each step connects.)
3. Copy: ``scp -q`` normally; with ``--resume``, an ``sftp`` batch that ``reput``/``reget``s files already partly
   there, ``put``/``get``s missing ones and skips complete ones.
4. Progress comes from the tunnel's byte counters (:mod:`.progress`); the summary reports file bytes, seconds and
   MB/s (or one JSON object with ``--output json``).
5. ``--verify``: sha256 of every copied file, locally and with ``sha256sum`` on the VM (over the same connection).

Exit status: scp/sftp's own status when the copy fails (1 for sftp batch errors, 255 for connection errors), 1
when ``--verify`` finds a difference, else 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import logging
import os
import posixpath
import re
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bastion_fast.exceptions import BastionFastError, UsageError

__all__ = [
    "CpPlan",
    "Location",
    "MasterFailed",
    "Pair",
    "RemoteShell",
    "make_plan",
    "master_connection",
    "parse_location",
    "plan_pairs",
    "remote_listing",
    "remote_parent_dirs",
    "remote_sha256",
    "remote_sizes",
    "resume_batch",
    "run_cp",
    "sftp_quote",
    "verify_pairs",
]

log = logging.getLogger("bastion_fast.commands.cp")

_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")


@dataclass(frozen=True)
class Location:
    """One path on the command line: local, or ``[user@]target:path``."""

    path: str
    target: str | None = None
    user: str | None = None

    @property
    def remote(self) -> bool:
        return self.target is not None


def parse_location(text: str) -> Location:
    """``[user@]target:path`` is remote (scp's rule); a path with a ``/`` before the first ``:``, or a Windows
    drive (``C:\\…``), is local. An empty remote path means the login directory."""
    if _WINDOWS_DRIVE.match(text) or text.startswith(("/", "./", "../")):
        return Location(text)
    colon = text.find(":")
    slash = text.find("/")
    if colon <= 0 or (0 <= slash < colon):
        return Location(text)
    head, path = text[:colon], text[colon + 1:]
    user, _, target = head.rpartition("@")
    return Location(path=path or ".", target=target, user=user or None)


def sftp_quote(path: str) -> str:
    """A path as one sftp batch-file argument (double quotes; backslash and quote escaped)."""
    return '"' + path.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _remote_join(base: str, *parts: str) -> str:
    return posixpath.join(base, *parts) if parts else base


def _remote_basename(path: str) -> str:
    return posixpath.basename(path.rstrip("/")) or path


@dataclass
class Pair:
    """One file of the copy: its local and remote path, and its size on the sending side (``None`` unknown)."""

    local: str
    remote: str
    size: int | None = None


def plan_pairs(*, upload: bool, sources: Sequence[str], dest: str, dest_is_dir: bool,
               remote_files: dict[str, list[tuple[str, int]]] | None = None) -> list[Pair]:
    """Every file the copy will write, with scp's placement rules.

    Upload: ``sources`` are local paths (files or directories). Download: ``sources`` are remote paths and
    ``remote_files[src]`` lists ``(remote file, size)`` under each (``[(src, size)]`` for a plain file).
    A source lands at ``dest/basename(src)`` when ``dest`` is (or must be) a directory, else at ``dest``.
    """
    pairs: list[Pair] = []
    for src in sources:
        if upload:
            base = _remote_join(dest, Path(src).name) if dest_is_dir else dest
            path = Path(src)
            if path.is_dir():
                for root, _dirs, files in os.walk(path):
                    for name in sorted(files):
                        file = Path(root) / name
                        rel = file.relative_to(path).as_posix()
                        pairs.append(Pair(str(file), _remote_join(base, rel), file.stat().st_size))
            else:
                pairs.append(Pair(str(path), base, path.stat().st_size))
        else:
            base_local = os.path.join(dest, _remote_basename(src)) if dest_is_dir else dest
            for remote, size in (remote_files or {}).get(src, []):
                rel = posixpath.relpath(remote, src) if remote != src else ""
                local = os.path.join(base_local, *rel.split("/")) if rel and rel != "." else base_local
                pairs.append(Pair(local, remote, size))
    return pairs


class RemoteShell:
    """Commands on the VM through the tunnel (and the master connection when there is one)."""

    def __init__(self, ssh: str, base_args: list[str], destination: str) -> None:
        self.ssh = ssh
        self.base_args = base_args
        self.destination = destination

    async def run(self, command: str, *, check: bool = True) -> tuple[int, str]:
        """Run ``command`` with the remote shell; return (status, stdout)."""
        process = await asyncio.create_subprocess_exec(
            self.ssh, *self.base_args, self.destination, command,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await process.communicate()
        status = process.returncode or 0
        if status and check:
            text = err.decode(errors="replace").strip().splitlines()
            raise _RemoteFailed(status, text[-1] if text else f"exit status {status}")
        return status, out.decode("utf-8", errors="surrogateescape")


class _RemoteFailed(BastionFastError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"A command on the VM failed: {message}",
                         hint="Check the remote path; --verify needs sha256sum and find on the VM.")
        self.status = status


def _sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


async def remote_sha256(shell: RemoteShell, paths: Sequence[str]) -> dict[str, str]:
    """sha256 of remote files (path → hex), in batches of 200 paths."""
    result: dict[str, str] = {}
    for i in range(0, len(paths), 200):
        batch = paths[i:i + 200]
        _, out = await shell.run("sha256sum -- " + " ".join(shlex.quote(p) for p in batch), check=False)
        for line in out.splitlines():
            digest, _, name = line.partition("  ")
            if name.startswith("\\"):  # sha256sum escapes odd names; rare enough to leave unverified
                continue
            result[name] = digest.lower()
    return result


async def remote_listing(shell: RemoteShell, sources: Sequence[str], recursive: bool
                         ) -> dict[str, list[tuple[str, int]]]:
    """For downloads: the files under each remote source with their sizes (GNU find)."""
    listing: dict[str, list[tuple[str, int]]] = {}
    for src in sources:
        quoted = shlex.quote(src)
        command = (f"find {quoted} -type f -printf '%s %p\\n'" if recursive
                   else f"stat -L -c '%s %n' -- {quoted}")
        _, out = await shell.run(command, check=False)
        entries = []
        for line in out.splitlines():
            size, _, path = line.partition(" ")
            if size.isdigit():
                entries.append((path, int(size)))
        listing[src] = sorted(entries)
    return listing


async def remote_sizes(shell: RemoteShell, paths: Sequence[str]) -> dict[str, int]:
    """Current sizes of remote files (missing files are absent from the result)."""
    sizes: dict[str, int] = {}
    for i in range(0, len(paths), 200):
        batch = paths[i:i + 200]
        _, out = await shell.run("stat -L -c '%s %n' -- " + " ".join(shlex.quote(p) for p in batch) +
                                 " 2>/dev/null", check=False)
        for line in out.splitlines():
            size, _, path = line.partition(" ")
            if size.isdigit():
                sizes[path] = int(size)
    return sizes


def resume_batch(pairs: Sequence[Pair], *, upload: bool, existing: dict[str, int]) -> tuple[str, int, int]:
    """The sftp batch for ``--resume``: (text, bytes still to send, files already complete).

    ``existing`` maps receiving-side paths to their current size. Missing → put/get; shorter → reput/reget;
    the same size → skipped; longer (not a prefix of ours) → copied again from the start. Directories must exist
    already (uploads: :func:`remote_parent_dirs` with ``mkdir -p``; downloads are created here).
    """
    lines: list[str] = []
    remaining = 0
    complete = 0
    for pair in pairs:
        target = pair.remote if upload else pair.local
        have = existing.get(target)
        size = pair.size or 0
        if have is not None and have == size:
            complete += 1
            continue
        if not upload:
            Path(pair.local).parent.mkdir(parents=True, exist_ok=True)
        partial = have is not None and have < size
        verb = ("reput" if upload else "reget") if partial else ("put" if upload else "get")
        src, dst = (pair.local, pair.remote) if upload else (pair.remote, pair.local)
        lines.append(f"@{verb} {sftp_quote(src)} {sftp_quote(dst)}")  # '@': sftp does not echo the line
        remaining += size - (have if partial and have else 0)
    return "\n".join(lines) + ("\n" if lines else ""), remaining, complete


def remote_parent_dirs(pairs: Sequence[Pair]) -> list[str]:
    """The distinct remote directories the files of an upload go into (for one ``mkdir -p``)."""
    return sorted({posixpath.dirname(p.remote) for p in pairs} - {"", ".", "/"})


@dataclass
class CpPlan:
    """What the command line asks for."""

    upload: bool
    sources: list[str]
    dest: str
    target: str
    user: str | None
    recursive: bool
    resume: bool
    verify: bool
    extra: list[str] = field(default_factory=list)


def make_plan(args: argparse.Namespace) -> CpPlan:
    """Check the paths: exactly one side remote, one target, local sources present.

    Raises:
        UsageError: with the rule that was broken.
    """
    paths = list(args.paths)
    if len(paths) < 2:
        raise UsageError("cp needs at least one source and a destination.",
                         hint="bastion-fast cp FILE user@TARGET:/path  or  bastion-fast cp user@TARGET:/path DIR")
    *sources, dest = (parse_location(p) for p in paths)
    remote_sources = [s for s in sources if s.remote]
    if dest.remote and remote_sources:
        raise UsageError("Copying between two remote locations is not supported.",
                         hint="Download to a local path first, or run cp on one of the VMs.")
    if not dest.remote and not remote_sources:
        raise UsageError("Neither the sources nor the destination is remote ([user@]TARGET:path).",
                         hint="Write the VM side as user@TARGET:/path, with TARGET a profile name or any name "
                              "when the target is given with --target-resource-id.")
    if not dest.remote and len(remote_sources) != len(sources):
        raise UsageError("Mixing local and remote sources is not supported.",
                         hint="Copy in one direction per command.")
    remotes = [dest] if dest.remote else remote_sources
    targets = {loc.target for loc in remotes}
    users = {loc.user for loc in remotes if loc.user}
    if len(targets) > 1 or len(users) > 1:
        raise UsageError("All remote paths must name the same [user@]TARGET.", hint="Run one cp per target.")
    upload = dest.remote
    if upload:
        for src in sources:
            path = Path(src.path)
            if not path.exists():
                raise UsageError(f"{src.path}: no such file or directory.", hint="Check the source path.")
            if path.is_dir() and not args.recursive:
                raise UsageError(f"{src.path} is a directory.", hint="Use -r to copy directories.")
    return CpPlan(upload=upload, sources=[s.path for s in sources], dest=dest.path, target=str(targets.pop()),
                  user=users.pop() if users else None, recursive=bool(args.recursive), resume=bool(args.resume),
                  verify=bool(args.verify))


@contextlib.asynccontextmanager
async def master_connection(ssh: str, base_args: list[str], destination: str) -> AsyncIterator[list[str]]:
    """One authenticated OpenSSH connection that later commands share (Unix); yields their extra options.

    Yields ``[]`` (no sharing) on Windows. OpenSSH's messages while logging in go to a log file and are shown
    afterwards, so a changed host key can be explained; a failed login raises :class:`MasterFailed`.
    """
    if sys.platform == "win32":
        yield []
        return
    directory = tempfile.mkdtemp(prefix="bf-cp-")
    path = os.path.join(directory, "cm")
    log_path = os.path.join(directory, "ssh.log")
    options = ["-o", f"ControlPath={path}", "-o", "ControlMaster=no"]
    process = await asyncio.create_subprocess_exec(
        ssh, *base_args, "-o", f"ControlPath={path}", "-o", "ControlMaster=yes", "-o", "ControlPersist=30",
        "-E", log_path, "-f", "-N", destination, stdout=asyncio.subprocess.DEVNULL)
    status = await process.wait()
    try:
        text = _take_log(log_path)
        if status != 0:
            raise MasterFailed(status, text)
        if text.strip():
            sys.stderr.write(text)
        yield options
    finally:
        if status == 0:
            stop = await asyncio.create_subprocess_exec(
                ssh, *base_args, "-o", f"ControlPath={path}", "-O", "exit", destination,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
            await stop.wait()
        shutil.rmtree(directory, ignore_errors=True)


class MasterFailed(BastionFastError):
    """The first (master) SSH login failed; ``status`` is OpenSSH's exit status, ``log`` its messages."""

    def __init__(self, status: int, log_text: str) -> None:
        super().__init__("Could not log in to the VM.",
                         hint="Check --username, --ssh-key / --auth-type, and that the VM's SSH server runs.")
        self.status = status
        self.log = log_text


def _take_log(path: str) -> str:
    """Read (and empty) OpenSSH's log file."""
    try:
        text = Path(path).read_text(errors="replace")
        Path(path).write_text("")
    except OSError:
        return ""
    return text


def _is_local_dir(path: str) -> bool:
    return Path(path).is_dir()


def _local_sizes(pairs: Sequence[Pair]) -> dict[str, int]:
    return {p.local: os.path.getsize(p.local) for p in pairs if os.path.isfile(p.local)}


def _local_total(pairs: Sequence[Pair]) -> int:
    return sum(p.size or 0 for p in pairs)


async def run_cp(args: argparse.Namespace, options: Any, plan: CpPlan) -> int:
    """Do the copy; return the exit status."""
    from bastion_fast.commands.hostkeys import explain_ssh_log
    from bastion_fast.commands.ssh import certificate_for, host_key_policy, plan_auth, target_label
    from bastion_fast.commands.sshclient import find_tool
    from bastion_fast.commands.tunnelling import command_tunnel

    folder = getattr(args, "ssh_client_folder", None)
    ssh, scp = find_tool("ssh", folder), find_tool("scp", folder)
    sftp = find_tool("sftp", folder) if plan.resume else "sftp"
    auth = plan_auth(args)
    policy = host_key_policy(options, insecure=bool(getattr(args, "insecure_host_key", False)))
    policy.prepare()
    json_output = getattr(args, "output", "text") == "json"
    show_progress = not getattr(args, "no_progress", False) and not json_output
    with certificate_for(args, options, auth) as cert:
        login = plan.user or (cert.principal if cert is not None else auth.username)
        auth_options = cert.ssh_args() if cert is not None else auth.options
        async with command_tunnel(options) as tunnel:
            common = [*policy.ssh_args(), *auth_options]
            if policy.insecure:
                common += ["-o", "LogLevel=ERROR"]
            if login:
                common += ["-o", f"User={login}"]
            ssh_args = ["-p", str(tunnel.port), *common]
            try:
                async with master_connection(ssh, ssh_args, "127.0.0.1") as shared:
                    shell = RemoteShell(ssh, [*ssh_args, *shared], "127.0.0.1")
                    copy_args = ["-P", str(tunnel.port), *common, *shared]
                    return await _copy(plan, shell, scp=scp, sftp=sftp, copy_args=copy_args, tunnel=tunnel,
                                       json_output=json_output, show_progress=show_progress)
            except MasterFailed as exc:
                rest, changed = explain_ssh_log(exc.log, policy, target_label(options))
                if rest.strip():
                    sys.stderr.write(rest)
                if changed:
                    print(f"error: {changed[0]}\nhint: {changed[1]}", file=sys.stderr)
                return exc.status


async def _copy(plan: CpPlan, shell: RemoteShell, *, scp: str, sftp: str, copy_args: list[str], tunnel: Any,
                json_output: bool, show_progress: bool) -> int:
    from bastion_fast.commands.progress import ProgressMeter, TransferSummary, tunnel_counters
    from bastion_fast.commands.tunnelling import run_child

    index = 0 if plan.upload else 1
    # Where things land (scp's rules need to know whether the destination is a directory beforehand).
    if plan.upload:
        dest_is_dir = len(plan.sources) > 1
        if not dest_is_dir:
            status, _ = await shell.run(f"test -d {shlex.quote(plan.dest)}", check=False)
            dest_is_dir = status == 0
        pairs = plan_pairs(upload=True, sources=plan.sources, dest=plan.dest, dest_is_dir=dest_is_dir)
    else:
        dest_is_dir = len(plan.sources) > 1 or _is_local_dir(plan.dest)
        listing = await remote_listing(shell, plan.sources, plan.recursive)
        missing = [src for src, files in listing.items() if not files]
        if missing:
            raise UsageError(f"{missing[0]}: no such file on the VM" +
                             (" (or it is a directory: use -r)." if not plan.recursive else "."),
                             hint="Check the remote path (relative paths start in the login directory).")
        pairs = plan_pairs(upload=False, sources=plan.sources, dest=plan.dest, dest_is_dir=dest_is_dir,
                           remote_files=listing)
    total = _local_total(pairs)
    resumed = False
    batch_file: Path | None = None
    if plan.resume:
        if plan.upload:
            parents = remote_parent_dirs(pairs)
            if parents:
                await shell.run("mkdir -p -- " + " ".join(shlex.quote(d) for d in parents))
            existing = await remote_sizes(shell, [p.remote for p in pairs])
        else:
            existing = _local_sizes(pairs)
        text, remaining, complete = resume_batch(pairs, upload=plan.upload, existing=existing)
        resumed = remaining < total
        log.info("resume: %d of %d files already complete, %d bytes to copy", complete, len(pairs), remaining)
        handle, name = tempfile.mkstemp(prefix="bf-cp-", suffix=".sftp")
        with os.fdopen(handle, "w", encoding="utf-8") as fh:
            fh.write(text)
        batch_file = Path(name)
        argv = [sftp, "-q", *copy_args, "-b", name, "127.0.0.1"]
        to_copy = remaining
    else:
        remote_spec = [f"127.0.0.1:{plan.dest}"] if plan.upload else [f"127.0.0.1:{s}" for s in plan.sources]
        local_spec = plan.sources if plan.upload else [plan.dest]
        argv = [scp, "-q", *(["-r"] if plan.recursive else []), *copy_args, "--",
                *(local_spec + remote_spec if plan.upload else remote_spec + local_spec)]
        to_copy = total
    label = "upload" if plan.upload else "download"
    start_counts = tunnel_counters(tunnel)
    started = time.monotonic()
    try:
        async with ProgressMeter(lambda: tunnel_counters(tunnel)[index] - start_counts[index],
                                 total=to_copy or None, label=label, enabled=show_progress):
            status = 0
            if batch_file is None or to_copy or not resumed:
                status = await run_child(argv, stdin=asyncio.subprocess.DEVNULL if batch_file else None)
    finally:
        if batch_file is not None:
            batch_file.unlink(missing_ok=True)
    seconds = time.monotonic() - started
    wire = tunnel_counters(tunnel)[index] - start_counts[index]
    if status != 0:
        log.error("error: the copy failed (%s exited with status %d)", Path(argv[0]).name, status)
        log.error("hint: run the same command with --resume to continue where it stopped")
        return int(status)
    verified: bool | None = None
    if plan.verify:
        verified = await verify_pairs(shell, pairs)
    summary = TransferSummary(direction=label, files=len(pairs), bytes=to_copy, seconds=seconds, wire_bytes=wire,
                              verified=verified, resumed=resumed, exit_code=0 if verified is not False else 1)
    if json_output:
        print(summary.as_json(), flush=True)
    else:
        print(summary.line(), file=sys.stderr, flush=True)
    return 0 if verified is not False else 1


async def verify_pairs(shell: RemoteShell, pairs: Sequence[Pair]) -> bool:
    """sha256 of every pair on both ends; logs the differences; True when all match."""
    remote = await remote_sha256(shell, [p.remote for p in pairs])
    local = await asyncio.to_thread(lambda: {p.local: _sha256_file(p.local) for p in pairs})
    bad = [p for p in pairs if remote.get(p.remote) != local[p.local]]
    for pair in bad[:10]:
        log.error("sha256 differs: %s (local %s) vs %s (remote %s)", pair.local, local[pair.local][:16],
                  pair.remote, (remote.get(pair.remote) or "missing")[:16])
    if bad:
        log.error("error: %d of %d files differ after the copy", len(bad), len(pairs))
    return not bad
