"""Seedable synthetic C-MAPSS-shaped fleet: the embedded default when no NASA files are given.

Model (after Saxena et al. 2008, simplified). Each unit u gets, from its own RNG (seeded by
(seed, conditions, u), so a unit's rows do not depend on how many units are generated):

- a lifetime T_u = max(life_min, round(life_offset + exp(N(mu, sigma)))) cycles (FD001/FD002 lifetimes
  fit mu = 4.30, sigma = 0.59 above an offset of 120 cycles: median about 194, minimum 128);
- an initial wear w_u ~ U(0, initial_wear_max);
- a health-degradation index that grows exponentially from w_u at cycle 0 to 1 at failure (cycle T_u):
  D_u(t) = w_u + (1 - w_u) * (exp(k t / T_u) - 1) / (exp(k) - 1), curvature k = 4;
- per cycle an operating condition c (always 1 with one condition; drawn with FD002's frequencies with
  six), settings = the condition's centre + Gaussian noise, and each sensor
  s_j = base_j(c) + delta_j(c) * D_u(t) + noise_j(c) * N(0, 1), rounded to the column's decimals.

base, delta and noise per (condition, sensor) are least-squares fits of that model to train_FD001 (one
condition) and train_FD002 (six conditions, split by rounding setting 1), so the sensors that trend in
FD001 trend the same way here (2, 3, 4, 8, 9, 11, 13, 14, 15, 17 up; 7, 12, 20, 21 down) and the
constant ones (1, 5, 10, 16, 18, 19) stay constant. The last row of each unit is its failure cycle (RUL 0),
as in the train files.

Standard library only (`random`, `math`); deterministic for a seed on every platform.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field

from enginehub.datasets.cmapss import Subset
from enginehub.datasets.schema import N_SENSORS, N_SETTINGS, VALUE_DECIMALS, Row

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConditionModel:
    """One operating condition: frequency, (mean, std) per setting, (base, delta, noise) per sensor."""

    weight: int
    settings: tuple[tuple[float, float], ...]
    sensors: tuple[tuple[float, float, float], ...]


# Fitted on train_FD001 (k = 4, mean initial wear 0.05); weight = rows in that condition.
FD001_MODEL: tuple[ConditionModel, ...] = (
    ConditionModel(
        weight=20631,
        settings=((0.0, 0.00219), (0.0, 0.00029), (100.0, 0.0)),
        sensors=(
            (518.67, 0.0, 0.0),
            (642.297, 1.412, 0.356),
            (1585.94, 16.85, 4.48),
            (1401.19, 28.45, 5.57),
            (14.62, 0.0, 0.0),
            (21.6097, 0.000552, 0.00138),
            (554.102, -2.697, 0.578),
            (2388.05, 0.1826, 0.0546),
            (9052.79, 45.78, 18.9),
            (1.3, 0.0, 0.0),
            (47.3063, 0.8631, 0.159),
            (522.039, -2.299, 0.466),
            (2388.05, 0.1847, 0.0553),
            (8134.97, 32.27, 17.3),
            (8.41145, 0.1128, 0.0249),
            (0.03, 0.0, 0.0),
            (392.009, 4.415, 1.09),
            (2388.0, 0.0, 0.0),
            (100.0, 0.0, 0.0),
            (38.9609, -0.5317, 0.123),
            (23.3768, -0.3202, 0.0734),
        ),
    ),
    # Fitted on train_FD002 per operating condition (setting 1 rounded: 0, 10, 20, 25, 35, 42 kft).
)
FD002_MODEL: tuple[ConditionModel, ...] = (
    ConditionModel(
        weight=8044,
        settings=((0.0015, 0.00087), (0.0005, 0.00065), (100.0, 0.0)),
        sensors=(
            (518.67, 0.0, 0.0),
            (642.294, 1.416, 0.349),
            (1585.97, 16.35, 4.44),
            (1401.05, 28.72, 5.38),
            (14.62, 0.0, 0.0),
            (21.6097, 0.0005126, 0.00128),
            (554.094, -2.695, 0.552),
            (2388.05, 0.1874, 0.0534),
            (9052.76, 37.04, 16.9),
            (1.3, 0.0, 0.0),
            (47.3054, 0.8688, 0.152),
            (522.041, -2.338, 0.45),
            (2388.05, 0.1884, 0.053),
            (8134.96, 24.65, 15.4),
            (8.41191, 0.1115, 0.0244),
            (0.03, 0.0, 0.0),
            (392.019, 4.335, 1.07),
            (2388.0, 0.0, 0.0),
            (100.0, 0.0, 0.0),
            (38.96, -0.5239, 0.121),
            (23.3754, -0.3136, 0.0712),
        ),
    ),
    ConditionModel(
        weight=8096,
        settings=((10.003, 0.0029), (0.2505, 0.00064), (100.0, 0.0)),
        sensors=(
            (489.05, 0.0, 0.0),
            (604.547, 1.348, 0.334),
            (1497.81, 15.46, 4.31),
            (1303.95, 26.89, 5.14),
            (10.52, 0.0, 0.0),
            (15.4897, 0.01326, 0.00333),
            (394.839, -1.891, 0.477),
            (2318.87, 0.3147, 0.0525),
            (8775.62, 36.11, 15.9),
            (1.26001, -3.738e-05, 0.000192),
            (45.2655, 0.8186, 0.148),
            (371.872, -1.57, 0.363),
            (2388.07, 0.3269, 0.0535),
            (8128.55, 24.21, 14.8),
            (8.63267, 0.1176, 0.0244),
            (0.03, 0.0, 0.0),
            (368.565, 4.176, 1.06),
            (2319.0, 0.0, 0.0),
            (100.0, 0.0, 0.0),
            (28.629, -0.3781, 0.109),
            (17.1767, -0.2244, 0.065),
        ),
    ),
    ConditionModel(
        weight=8122,
        settings=((20.003, 0.00289), (0.7005, 0.00066), (100.0, 0.0)),
        sensors=(
            (491.19, 0.0, 0.0),
            (607.221, 1.262, 0.34),
            (1481.48, 15.09, 4.4),
            (1246.62, 23.84, 5.05),
            (9.35, 0.0, 0.0),
            (13.6542, 0.008868, 0.00419),
            (334.931, -1.593, 0.458),
            (2323.92, 0.3795, 0.0839),
            (8720.52, 33.93, 15.0),
            (1.07989, -0.007935, 0.00369),
            (44.2419, 0.7568, 0.145),
            (315.246, -1.368, 0.362),
            (2388.05, 0.3882, 0.0863),
            (8059.65, 22.96, 14.0),
            (9.19961, 0.1214, 0.0246),
            (0.0188702, 0.01201, 0.00281),
            (364.27, 4.087, 1.06),
            (2324.0, 0.0, 0.0),
            (100.0, 0.0, 0.0),
            (24.5429, -0.3255, 0.108),
            (14.7253, -0.1925, 0.0638),
        ),
    ),
    ConditionModel(
        weight=8002,
        settings=((25.003, 0.00288), (0.6205, 0.00065), (60.0, 0.0)),
        sensors=(
            (462.54, 0.0, 0.0),
            (536.667, 0.728, 0.31),
            (1259.23, 12.68, 4.26),
            (1044.85, 20.12, 4.68),
            (7.05, 0.0, 0.0),
            (9.02629, 0.005402, 0.00396),
            (175.621, -0.7154, 0.412),
            (1915.3, 0.4164, 0.242),
            (8007.64, 28.88, 12.2),
            (0.940001, -0.0002943, 0.000881),
            (36.6226, 0.657, 0.132),
            (164.737, -0.6056, 0.31),
            (2028.19, 0.4417, 0.255),
            (7872.14, 23.24, 11.7),
            (10.8752, 0.1426, 0.0253),
            (0.02, 0.0, 0.0),
            (306.469, 3.231, 1.02),
            (1915.0, 0.0, 0.0),
            (84.93, 0.0, 0.0),
            (14.3117, -0.1797, 0.103),
            (8.58753, -0.1069, 0.0607),
        ),
    ),
    ConditionModel(
        weight=8037,
        settings=((35.003, 0.00288), (0.8405, 0.00065), (100.0, 0.0)),
        sensors=(
            (449.44, 0.0, 0.0),
            (555.474, 1.197, 0.326),
            (1362.72, 14.7, 4.29),
            (1125.35, 22.75, 4.84),
            (5.48, 0.0, 0.0),
            (7.99958, 0.002639, 0.00157),
            (194.681, -0.8741, 0.425),
            (2222.91, 0.4748, 0.253),
            (8346.88, 33.92, 14.8),
            (1.02056, -0.0006307, 0.00193),
            (41.7814, 0.7393, 0.141),
            (183.229, -0.7559, 0.327),
            (2388.0, 0.5096, 0.272),
            (8065.6, 24.29, 14.2),
            (9.30054, 0.1168, 0.0251),
            (0.02, 0.0, 0.0),
            (333.194, 3.83, 1.04),
            (2223.0, 0.0, 0.0),
            (100.0, 0.0, 0.0),
            (14.8846, -0.1979, 0.102),
            (8.92842, -0.1122, 0.0612),
        ),
    ),
    ConditionModel(
        weight=13458,
        settings=((42.003, 0.00291), (0.8405, 0.00064), (100.0, 0.0)),
        sensors=(
            (445.0, 0.0, 0.0),
            (549.393, 1.146, 0.324),
            (1350.49, 14.59, 4.28),
            (1121.38, 23.61, 4.82),
            (3.91, 0.0, 0.0),
            (5.71417, 0.006146, 0.00468),
            (138.779, -0.5478, 0.417),
            (2211.88, 0.3425, 0.287),
            (8318.23, 35.48, 15.7),
            (1.01976, 0.001794, 0.00148),
            (41.9387, 0.772, 0.14),
            (130.668, -0.4349, 0.323),
            (2387.95, 0.3675, 0.31),
            (8082.45, 25.67, 15.2),
            (9.34708, 0.1028, 0.0272),
            (0.02, 0.0, 0.0),
            (330.017, 3.855, 1.02),
            (2212.0, 0.0, 0.0),
            (100.0, 0.0, 0.0),
            (10.6245, -0.1399, 0.102),
            (6.37347, -0.08169, 0.0611),
        ),
    ),
)


@dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of the synthetic fleet (defaults reproduce FD001/FD002-like data)."""

    units: int = 100
    conditions: int = 1  # 1 (FD001-like) or 6 (FD002-like)
    seed: int = 0
    curvature: float = 4.0
    initial_wear_max: float = 0.1
    life_offset: float = 120.0
    life_mu: float = 4.30
    life_sigma: float = 0.59
    life_min: int = 128
    noise_scale: float = 1.0
    models: tuple[ConditionModel, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.units, bool) or not isinstance(self.units, int) or self.units < 1:
            raise ValueError(f"units must be an int >= 1, got {self.units!r}")
        if self.conditions not in (1, 6):
            raise ValueError(f"conditions must be 1 or 6, got {self.conditions!r}")
        if not 0.0 <= self.initial_wear_max < 1.0:
            raise ValueError(f"initial_wear_max must be in [0, 1), got {self.initial_wear_max!r}")
        if self.curvature <= 0 or self.life_min < 2 or self.noise_scale < 0 or self.life_sigma < 0:
            raise ValueError("curvature must be > 0, life_min >= 2, noise_scale and life_sigma >= 0")
        if not self.models:
            object.__setattr__(self, "models", FD001_MODEL if self.conditions == 1 else FD002_MODEL)
        if len(self.models) != self.conditions:
            raise ValueError(f"{len(self.models)} condition models for {self.conditions} conditions")
        for i, m in enumerate(self.models, 1):
            if len(m.settings) != N_SETTINGS or len(m.sensors) != N_SENSORS or m.weight <= 0:
                raise ValueError(
                    f"condition model {i}: needs {N_SETTINGS} settings, {N_SENSORS} sensors and a weight > 0"
                )


@dataclass(frozen=True)
class UnitPlan:
    """What the generator decided for one unit: lifetime (failure cycle) and initial wear."""

    unit: int
    life: int
    initial_wear: float


def _rng(config: SyntheticConfig, unit: int, stream: str) -> random.Random:
    # str seeds are hashed with SHA-512 by `random` (not hash()): stable across runs and platforms.
    return random.Random(f"enginehub-synthetic:{config.seed}:{config.conditions}:{stream}:{unit}")


def plan_unit(config: SyntheticConfig, unit: int, stream: str = "train") -> UnitPlan:
    """Lifetime and initial wear of `unit` (1-based); independent of the other units."""
    if unit < 1:
        raise ValueError(f"unit must be >= 1, got {unit}")
    rng = _rng(config, unit, stream)
    life = round(config.life_offset + math.exp(rng.gauss(config.life_mu, config.life_sigma)))
    return UnitPlan(unit, max(config.life_min, life), rng.uniform(0.0, config.initial_wear_max))


def degradation(cycle: int, life: int, initial_wear: float, curvature: float = 4.0) -> float:
    """D(t) = w + (1 - w) * (exp(k t / T) - 1) / (exp(k) - 1): w at t = 0, 1 at failure (t = T)."""
    return initial_wear + (1.0 - initial_wear) * math.expm1(curvature * cycle / life) / math.expm1(curvature)


def _q(value: float, decimals: int) -> float:
    return float(f"{value:.{decimals}f}")


def unit_rows(
    config: SyntheticConfig, unit: int, stream: str = "train", cycles: int | None = None
) -> list[Row]:
    """The rows of one unit, cycle 1 up to its failure cycle (or the first `cycles` of them)."""
    plan = plan_unit(config, unit, stream)
    rng = _rng(config, unit, stream + ":cycles")
    models = config.models
    weights = [m.weight for m in models]
    last = plan.life if cycles is None else min(cycles, plan.life)
    rows: list[Row] = []
    for cycle in range(1, last + 1):
        model = models[0] if len(models) == 1 else rng.choices(models, weights)[0]
        health = degradation(cycle, plan.life, plan.initial_wear, config.curvature)
        settings = tuple(
            _q(mean + std * rng.gauss(0.0, 1.0), d)
            for (mean, std), d in zip(model.settings, VALUE_DECIMALS[:N_SETTINGS], strict=True)
        )
        sensors = tuple(
            _q(base + delta * health + config.noise_scale * noise * rng.gauss(0.0, 1.0), d)
            for (base, delta, noise), d in zip(model.sensors, VALUE_DECIMALS[N_SETTINGS:], strict=True)
        )
        rows.append(Row(unit, cycle, settings, sensors))
    return rows


def iter_fleet(config: SyntheticConfig | None = None, **kwargs: object) -> Iterator[Row]:
    """Run-to-failure rows of units 1..N, unit by unit (the train-file order). kwargs build a config."""
    config = config or SyntheticConfig(**kwargs)  # type: ignore[arg-type]
    for unit in range(1, config.units + 1):
        yield from unit_rows(config, unit)


def generate_fleet(units: int = 100, conditions: int = 1, seed: int = 0, **kwargs: object) -> list[Row]:
    """All run-to-failure rows of a synthetic fleet, as a train_FD00x file would hold them."""
    return list(iter_fleet(SyntheticConfig(units=units, conditions=conditions, seed=seed, **kwargs)))  # type: ignore[arg-type]


def generate_subset(units: int = 100, conditions: int = 1, seed: int = 0, **kwargs: object) -> Subset:
    """A C-MAPSS-shaped subset: train (run to failure), test (other units cut before failure) and RUL.

    Each test unit is cut after a uniform fraction in [0.1, 0.9] of its life (at least 1 cycle before
    failure); its true RUL is life - last cycle, as in RUL_FD00x.
    """
    config = SyntheticConfig(units=units, conditions=conditions, seed=seed, **kwargs)  # type: ignore[arg-type]
    train = list(iter_fleet(config))
    test: list[Row] = []
    rul: list[int] = []
    for unit in range(1, units + 1):
        plan = plan_unit(config, unit, "test")
        cut_rng = _rng(config, unit, "test:cut")
        keep = max(1, min(plan.life - 1, round(plan.life * cut_rng.uniform(0.1, 0.9))))
        test.extend(unit_rows(config, unit, "test", cycles=keep))
        rul.append(plan.life - keep)
    name = f"synthetic-{conditions}c-seed{seed}"
    LOG.debug("generated %s: %d train rows, %d test rows", name, len(train), len(test))
    return Subset(name, train, test, rul)


__all__ = [
    "FD001_MODEL",
    "FD002_MODEL",
    "ConditionModel",
    "SyntheticConfig",
    "UnitPlan",
    "degradation",
    "generate_fleet",
    "generate_subset",
    "iter_fleet",
    "plan_unit",
    "unit_rows",
]
