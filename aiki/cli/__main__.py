"""``python -m aiki.cli``: the ``aiki`` command."""

from aiki.cli import main

raise SystemExit(main())
