"""enginehub.datasets: the NASA C-MAPSS reader/validator, payload codecs, synthetic fleet, RUL labels/windows.

The row type everyone shares is `Row` (see `enginehub.datasets.schema`).
"""

from enginehub.datasets.schema import COLUMN_NAMES, DECIMALS, FIELD_NAMES, Row

__all__ = ["COLUMN_NAMES", "DECIMALS", "FIELD_NAMES", "Row"]
