"""``python -m gradesync.sandbox``."""

from gradesync.sandbox.cli import main

raise SystemExit(main())
