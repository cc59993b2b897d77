"""`python -m enginehub.datasets ...` is `enginehub-datasets ...`."""

import sys

from enginehub.datasets.cli import main

sys.exit(main())
