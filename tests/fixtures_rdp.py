"""A real RDP server (xrdp) and X display (Xvfb) on loopback, and screenshots of the display.

``running_xvfb()`` lets Xvfb pick a free display (``-displayfd``) and maps its framebuffer to a file (``-fbdir``),
so a test can read the screen without any X client library. ``running_xrdp()`` starts ``xrdp -n`` with its own
config (loopback port, log file, no syslog, fixed login-screen colours) — xrdp draws its login screen itself, no
session manager is needed for that. :func:`read_xwd` and :func:`write_png` turn the framebuffer into a PNG.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "LOGIN_BACKGROUND",
    "LOGIN_BOX",
    "Screen",
    "rdp_missing_reason",
    "read_xwd",
    "running_xrdp",
    "running_xvfb",
    "write_png",
]

LOGIN_BACKGROUND = 0x009CB5  # ls_top_window_bg_color we configure
LOGIN_BOX = 0xDEDEDE  # ls_bg_color


def rdp_missing_reason() -> str | None:
    """Why the real RDP test cannot run here (``None`` when it can)."""
    for program, package in (("/usr/sbin/xrdp", "xrdp"), ("Xvfb", "xvfb"), ("xfreerdp", "freerdp2-x11")):
        if shutil.which(program) is None and not Path(program).exists():
            return f"{program} not installed (apt-get install {package})"
    if not Path("/etc/xrdp/xrdp.ini").exists():
        return "/etc/xrdp/xrdp.ini missing (broken xrdp install)"
    if not os.access("/etc/xrdp/rsakeys.ini", os.R_OK):
        return "/etc/xrdp/rsakeys.ini is not readable by this user (xrdp needs root or the xrdp group here)"
    return None


@dataclass
class Screen:
    """A decoded framebuffer: ``pixels[y][x]`` as 0xRRGGBB."""

    width: int
    height: int
    pixels: list[list[int]]

    def fraction(self, colour: int, step: int = 4) -> float:
        hits = total = 0
        for y in range(0, self.height, step):
            row = self.pixels[y]
            for x in range(0, self.width, step):
                total += 1
                hits += row[x] == colour
        return hits / max(total, 1)


def read_xwd(path: Path) -> Screen:
    """Decode Xvfb's ``-fbdir`` file (XWD, 24/32 bits per pixel TrueColor)."""
    data = path.read_bytes()
    fields = struct.unpack(">25I", data[:100])
    header_size, ncolors = fields[0], fields[19]
    width, height, byte_order, bpp, bytes_per_line = fields[4], fields[5], fields[7], fields[11], fields[12]
    offset = header_size + ncolors * 12
    order = "little" if byte_order == 0 else "big"
    step = bpp // 8
    pixels = []
    for y in range(height):
        row = data[offset + y * bytes_per_line: offset + y * bytes_per_line + width * step]
        pixels.append([int.from_bytes(row[x:x + step], order) & 0xFFFFFF for x in range(0, width * step, step)])
    return Screen(width, height, pixels)


def write_png(screen: Screen, path: Path) -> None:
    """A minimal RGB PNG writer (no imaging library needed)."""
    raw = bytearray()
    for row in screen.pixels:
        raw.append(0)
        for value in row:
            raw += bytes(((value >> 16) & 255, (value >> 8) & 255, value & 255))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", screen.width, screen.height, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(bytes(raw), 6)) + chunk(b"IEND", b"")
    path.write_bytes(png)


@contextlib.contextmanager
def running_xvfb(width: int = 1024, height: int = 768) -> Iterator[tuple[str, Path]]:
    """(DISPLAY value, framebuffer file) of a fresh Xvfb; stopped afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="bf-xvfb-"))
    read_fd, write_fd = os.pipe()
    process = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-screen", "0", f"{width}x{height}x24",
                                "-fbdir", str(directory), "-nolisten", "tcp", "-noreset"], pass_fds=(write_fd,),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_fd)
    try:
        number = b""
        deadline = time.monotonic() + 30
        while not number.endswith(b"\n") and time.monotonic() < deadline:
            piece = os.read(read_fd, 16)
            if not piece:
                break
            number += piece
        if not number.strip():
            raise RuntimeError("Xvfb did not report a display number")
        yield f":{int(number)}", directory / "Xvfb_screen0"
    finally:
        os.close(read_fd)
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(directory, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running_xrdp() -> Iterator[int]:
    """Start xrdp on a free loopback port; yield the port; stop it afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="bf-xrdp-"))
    port = _free_port()
    overrides = {
        "port": f"tcp://127.0.0.1:{port}",
        "fork": "false",
        "LogFile": str(directory / "xrdp.log"),
        "EnableSyslog": "false",
        "ls_top_window_bg_color": f"{LOGIN_BACKGROUND:06x}",
        "ls_bg_color": f"{LOGIN_BOX:06x}",
    }
    lines = []
    for line in Path("/etc/xrdp/xrdp.ini").read_text().splitlines():
        key = line.split("=", 1)[0].strip()
        lines.append(f"{key}={overrides[key]}" if key in overrides else line)
    config = directory / "xrdp.ini"
    config.write_text("\n".join(lines) + "\n")
    log = (directory / "stdout.log").open("wb")
    process = subprocess.Popen(["xrdp", "--nodaemon", "--config", str(config)], stdout=log, stderr=log,
                               stdin=subprocess.DEVNULL, cwd=directory)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError("xrdp exited: " + (directory / "xrdp.log").read_text(errors="replace")
                                   if (directory / "xrdp.log").exists() else "xrdp exited")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("xrdp did not listen in time")
            time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        shutil.rmtree(directory, ignore_errors=True)
