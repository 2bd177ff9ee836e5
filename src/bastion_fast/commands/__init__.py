"""What the everyday commands do on top of a tunnel: ssh, proxy, ssh-config, rdp, cp, profiles and ``up``.

The ``cli/<name>.py`` modules only parse flags; the logic lives here in small modules with one job each:

* :mod:`.profiles` — named targets from a TOML file, pre-filling any command's flags
* :mod:`.cliargs` — argparse helpers shared by the commands (profile argument, ``--`` pass-through)
* :mod:`.sshclient` — finding OpenSSH (``ssh``/``scp``/``sftp``) without a shell, on every platform
* :mod:`.hostkeys` — per-target known_hosts with ``HostKeyAlias`` instead of ``StrictHostKeyChecking=no``
* :mod:`.aadcert` — Entra ID (AAD) OpenSSH certificates through MSAL, in a temp dir removed afterwards
* :mod:`.sshconfig` — ``Host`` blocks that use ``bastion-fast proxy`` as ProxyCommand
* :mod:`.rdp` — ``.rdp`` files, the gateway ``/api/rdpfile`` call and RDP client discovery
* :mod:`.progress` — transfer progress on stderr driven by the tunnel's byte counters
* :mod:`.cp` — file transfer through OpenSSH scp/sftp over an in-process tunnel, resume and verify
* :mod:`.up` — several named tunnels in one process with one status table
"""

__all__: list[str] = []
