"""``python -m enginehub.ingest`` = the ``ingest`` command."""

from enginehub.ingest.cli import main

raise SystemExit(main())
