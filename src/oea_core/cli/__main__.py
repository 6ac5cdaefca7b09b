"""``python -m oea_core.cli``: the ``oea`` command."""

from __future__ import annotations

import sys

from .main import main

sys.exit(main())
