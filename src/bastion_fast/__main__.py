"""``python -m bastion_fast`` runs the command line."""

from bastion_fast.cli import main

raise SystemExit(main())
