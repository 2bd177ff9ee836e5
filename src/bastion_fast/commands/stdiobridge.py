"""stdin/stdout as a socket, for where the event loop cannot watch them: Windows pipes and consoles, regular files.

Two daemon threads copy stdin → one end of a local socket pair and that end → stdout with blocking I/O; the other end
is an ordinary socket the tunnel's session takes like any accepted TCP connection. Half-closes are kept: EOF on stdin
becomes ``shutdown(SHUT_WR)``, and the session's EOF ends stdout. Each copy uses one 256 KiB buffer, so memory is
bounded; back-pressure is the socket buffers'.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading

__all__ = ["stdio_socket"]

_CHUNK = 256 * 1024


def _copy_in(source_fd: int, sock: socket.socket) -> None:
    try:
        while True:
            data = os.read(source_fd, _CHUNK)
            if not data:
                break
            sock.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)


def _copy_out(sock: socket.socket, target_fd: int) -> None:
    try:
        while True:
            data = sock.recv(_CHUNK)
            if not data:
                break
            view = memoryview(data)
            while view:
                written = os.write(target_fd, view)
                view = view[written:]
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            os.close(target_fd)


def stdio_socket() -> tuple[socket.socket, threading.Thread]:
    """A socket whose peer is bridged to stdin/stdout by two daemon threads; and the stdout thread (join it)."""
    ours, theirs = socket.socketpair()
    in_fd, out_fd = os.dup(0), os.dup(1)
    threading.Thread(target=_copy_in, args=(in_fd, theirs), name="stdin-bridge", daemon=True).start()
    out = threading.Thread(target=_copy_out, args=(theirs, out_fd), name="stdout-bridge", daemon=True)
    out.start()
    return ours, out
