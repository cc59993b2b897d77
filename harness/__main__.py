import sys

from enginehub.harness.cli import main

sys.exit(main())
