"""Administration of a Bastion host: what ``bastion``, ``sessions``, ``links`` and ``doctor`` do, as a library.

Every function takes an :class:`~bastion_fast.ops.arm.ArmSession` (``await open_arm(options)``) and a
:class:`~bastion_fast.ops.arm.BastionRef`, talks to Azure Resource Manager through azure-mgmt-network, and returns a
report with ``to_json()`` and ``tables()`` (see :mod:`bastion_fast.ops.output`). Nothing here prompts: confirmation
is the CLI's job, so library users decide for themselves.

Module map: ``arm`` (client and ARM errors), ``show``, ``configure``, ``sessions``, ``links``, ``doctor`` (+
``doctor_local`` for the caller's machine, ``findings``), ``nsg`` (security-rule evaluation), ``values`` (az
booleans, durations), ``output`` (table/JSON, prompts).

Example::

    from bastion_fast.ops.arm import BastionRef, open_arm
    from bastion_fast.ops.sessions import list_sessions

    async with await open_arm(options) as arm:
        report = await list_sessions(arm, BastionRef(arm.subscription, "rg", "bastion"))
        print(report.to_json())
"""

from __future__ import annotations

__all__: list[str] = []
