"""``python -m enginehub.simulator`` = ``simulate``."""

import sys

from enginehub.simulator.cli import main

sys.exit(main())
