"""Sequence model for remaining useful life: a small 1-D CNN or LSTM on the 30-cycle windows, in JAX.

``python -m enginehub.datasets.rul --model seq`` trains it (one model per seed, predictions averaged);
``benchmarks/rul_validate.py --model seq`` compares the two architectures on held-out training units.

Inputs: the same per-row matrix as the gradient-boosted model (:func:`enginehub.datasets.rul.row_matrix`:
the 14 sensors z-scored per operating condition, the linear health indicator, the cycle number, the
whole-history features of each channel and, for FD002/FD004, the condition features), standardised per
column on the training rows, cut into windows of 30 cycles (:func:`enginehub.datasets.labels.
window_index`; batches are gathered from the row matrix, so no (windows, 30, columns) array is built).
Target: the RUL capped at 125, divided by the cap; MSE loss, AdamW with a cosine learning-rate decay.

- ``cnn``: two same-padded convolutions (kernel 5, ``hidden`` filters, ReLU) over time, then the last
  step, the mean over the window and the raw last row concatenated into a dense layer of ``dense`` units.
- ``lstm``: one LSTM layer of ``hidden`` units, its last state and the raw last row into the dense layer.

Framework: JAX (``jax`` + ``jaxlib`` CPU wheels from PyPI, 3 + 85 MB to download, about 380 MB
installed, no CUDA download) with ``optax`` for the optimiser: the optional ``seq`` extra
(``pip install 'enginehub[seq]'``), not installed by ``make venv``. The PyPI ``torch`` wheel for Linux
is 539 MB and pulls 28 more packages (the CUDA 13 runtime, cuDNN, NCCL, triton), and the CPU-only
wheel index is not one of the registries reachable here; Keras 3 would sit on JAX anyway (one more
layer and h5py/optree/absl for two small networks); ONNX Runtime (28 MB) only runs inference. XLA is
held to one thread (``XLA_FLAGS``, set before jax is first imported) so training stays frugal on a shared
machine; with a fixed seed a fit is deterministic on CPU.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from enginehub.datasets import analysis, rul
from enginehub.datasets import labels as lab

LOG = logging.getLogger(__name__)

ARCHITECTURES: tuple[str, ...] = ("cnn", "lstm")
INSTALL_HINT = "pip install 'enginehub[seq]' (or pip install jax jaxlib optax)"
#: XLA on one CPU thread unless the caller set XLA_FLAGS (it is read once, when jax is first imported).
XLA_ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def require_jax() -> tuple[Any, Any, Any]:
    """(jax, jax.numpy, optax), or AnalysisError naming the extra when they are not installed."""
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    os.environ.setdefault("XLA_FLAGS", XLA_ONE_THREAD)
    try:
        import jax
        import jax.numpy as jnp
        import optax
    except ImportError as exc:
        raise analysis.AnalysisError(f"the sequence model needs jax and optax: {INSTALL_HINT}") from exc
    return jax, jnp, optax


def available() -> bool:
    """True when the ``seq`` extra (jax, optax) is importable."""
    try:
        require_jax()
    except analysis.AnalysisError:
        return False
    return True


@dataclass
class SeqConfig:
    arch: str = "cnn"
    window: int = rul.WINDOW
    cap: int = rul.RUL_CAP
    sensors: tuple[int, ...] = rul.STANDARD_SENSORS
    hidden: int = 32
    dense: int = 64
    kernel: int = 5
    epochs: int = 15
    batch: int = 256
    learning_rate: float = 2e-3
    weight_decay: float = 1.0
    #: training only: Gaussian noise (in standard deviations) added to the inputs, dropout before the head
    noise: float = 0.0
    dropout: float = 0.2
    seeds: tuple[int, ...] = (1, 2, 3)
    #: the inputs, as for the gradient-boosted model (:class:`enginehub.datasets.rul.ModelConfig`)
    history: bool = True
    #: of :data:`enginehub.datasets.rul.HISTORY_FEATURES`, those fed to the network (the baseline and the
    #: long EWM identify a unit, which a network memorises; chosen on held-out training units)
    history_keep: tuple[str, ...] = ("drift", "slope_all")
    #: feed the cycle number
    cycle: bool = True
    condition_history: bool = True
    health: bool = True
    snap: float | None = None
    #: stop after this many windows per seed (None: all epochs); a smoke run's bound
    max_steps: int | None = None

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"arch must be one of {ARCHITECTURES}, got {self.arch!r}")
        unknown = set(self.history_keep) - set(rul.HISTORY_FEATURES)
        if unknown:
            raise ValueError(f"history_keep: unknown {sorted(unknown)}, not in {rul.HISTORY_FEATURES}")
        if self.epochs < 1 or self.batch < 1 or self.hidden < 1 or self.dense < 1 or self.kernel < 1:
            raise ValueError("epochs, batch, hidden, dense and kernel must be >= 1")


# -- the networks (pure functions of a parameter tree) ----------------------------------------------------


def init_params(arch: str, n_in: int, hidden: int, dense: int, kernel: int, seed: int) -> dict[str, Any]:
    """Glorot-uniform weights, zero biases (the LSTM's forget-gate bias 1), from ``seed``."""
    _, jnp, _ = require_jax()
    rng = np.random.default_rng(seed)

    def glorot(shape: tuple[int, ...], fan_in: int, fan_out: int) -> Any:
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        return jnp.asarray(rng.uniform(-limit, limit, size=shape), dtype=jnp.float32)

    def zeros(n: int) -> Any:
        return jnp.zeros((n,), dtype=jnp.float32)

    if arch == "cnn":
        head_in = 2 * hidden + n_in
        params: dict[str, Any] = {
            "c1_w": glorot((kernel, n_in, hidden), kernel * n_in, kernel * hidden),
            "c1_b": zeros(hidden),
            "c2_w": glorot((kernel, hidden, hidden), kernel * hidden, kernel * hidden),
            "c2_b": zeros(hidden),
        }
    elif arch == "lstm":
        head_in = hidden + n_in
        bias = np.zeros(4 * hidden, dtype=np.float32)
        bias[hidden : 2 * hidden] = 1.0  # forget gate
        params = {
            "wx": glorot((n_in, 4 * hidden), n_in, 4 * hidden),
            "wh": glorot((hidden, 4 * hidden), hidden, 4 * hidden),
            "b": jnp.asarray(bias),
        }
    else:
        raise ValueError(f"arch must be one of {ARCHITECTURES}, got {arch!r}")
    params |= {
        "d1_w": glorot((head_in, dense), head_in, dense),
        "d1_b": zeros(dense),
        "out_w": glorot((dense, 1), dense, 1),
        "out_b": zeros(1),
    }
    return params


def apply(arch: str, params: dict[str, Any], x: Any, drop: Any = None) -> Any:
    """(batch,) outputs of the network for windows ``x`` (batch, time, inputs), in units of the cap;
    ``drop`` (training only) is a mask multiplied into the features before the dense layer."""
    jax, jnp, _ = require_jax()
    last = x[:, -1, :]
    if arch == "cnn":
        dims = ("NWC", "WIO", "NWC")
        h = jax.lax.conv_general_dilated(x, params["c1_w"], (1,), "SAME", dimension_numbers=dims)
        h = jax.nn.relu(h + params["c1_b"])
        h = jax.lax.conv_general_dilated(h, params["c2_w"], (1,), "SAME", dimension_numbers=dims)
        h = jax.nn.relu(h + params["c2_b"])
        feats = jnp.concatenate([h[:, -1, :], h.mean(axis=1), last], axis=1)
    else:
        hidden = params["wh"].shape[0]
        gates_x = jnp.einsum("bti,ig->tbg", x, params["wx"]) + params["b"]

        def step(carry: tuple[Any, Any], gx: Any) -> tuple[tuple[Any, Any], None]:
            h, c = carry
            g = gx + h @ params["wh"]
            i, f, o = (jax.nn.sigmoid(g[:, k * hidden : (k + 1) * hidden]) for k in range(3))
            c = f * c + i * jnp.tanh(g[:, 3 * hidden :])
            return (o * jnp.tanh(c), c), None

        zero = jnp.zeros((x.shape[0], hidden), dtype=x.dtype)
        (h, _), _ = jax.lax.scan(step, (zero, zero), gates_x)
        feats = jnp.concatenate([h, last], axis=1)
    if drop is not None:
        feats = feats * drop
    z = jax.nn.relu(feats @ params["d1_w"] + params["d1_b"])
    return (z @ params["out_w"] + params["out_b"])[:, 0]


# -- training -------------------------------------------------------------------------------------------


def train_network(
    rows: np.ndarray,
    index: np.ndarray,
    targets: np.ndarray,
    config: SeqConfig,
    seed: int,
) -> dict[str, Any]:
    """Fit one network on windows ``rows[index]`` (rows already standardised, float32, with the zero row
    last) against ``targets`` (already divided by the cap); deterministic for a given seed."""
    jax, jnp, optax = require_jax()
    n = len(index)
    if n == 0:
        raise analysis.AnalysisError("no training windows")
    batch = min(config.batch, n)
    per_epoch = max(1, n // batch)
    total = per_epoch * config.epochs
    if config.max_steps is not None:
        total = max(1, min(total, config.max_steps // batch))
    params = init_params(config.arch, rows.shape[1], config.hidden, config.dense, config.kernel, seed)
    schedule = optax.cosine_decay_schedule(config.learning_rate, total)
    opt = optax.adamw(schedule, weight_decay=config.weight_decay)
    state = opt.init(params)
    arch = config.arch

    noise, keep = config.noise, 1.0 - config.dropout

    def loss_fn(p: dict[str, Any], xb: Any, yb: Any, key: Any) -> Any:
        k_noise, k_drop = jax.random.split(key)
        if noise > 0:
            xb = xb + noise * jax.random.normal(k_noise, xb.shape, dtype=xb.dtype)
        drop = None
        if keep < 1.0:
            width = p["d1_w"].shape[0]
            drop = jax.random.bernoulli(k_drop, keep, (xb.shape[0], width)).astype(xb.dtype) / keep
        return jnp.mean((apply(arch, p, xb, drop) - yb) ** 2)

    @jax.jit
    def step(p: dict[str, Any], s: Any, xb: Any, yb: Any, key: Any) -> tuple[Any, Any, Any]:
        loss, grads = jax.value_and_grad(loss_fn)(p, xb, yb, key)
        updates, s = opt.update(grads, s, p)
        return optax.apply_updates(p, updates), s, loss

    rng = np.random.default_rng(seed)
    base_key = jax.random.PRNGKey(seed)
    done = 0
    loss = float("nan")
    while done < total:
        order = rng.permutation(n)
        for b in range(per_epoch):
            if done >= total:
                break
            pick = order[b * batch : (b + 1) * batch]
            params, state, loss = step(
                params, state, rows[index[pick]], targets[pick], jax.random.fold_in(base_key, done)
            )
            done += 1
        LOG.debug("seed %d: step %d/%d, loss %.5f", seed, done, total, float(loss))
    return params


def predict_network(arch: str, params: dict[str, Any], rows: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Network outputs (in units of the cap) for the windows ``rows[index]``, in chunks."""
    jax, _, _ = require_jax()
    fn = jax.jit(lambda p, xb: apply(arch, p, xb))
    out = [np.asarray(fn(params, rows[index[i : i + 2048]])) for i in range(0, len(index), 2048)]
    return np.concatenate(out) if out else np.empty(0)


class SeqModel:
    """Fit on training rows (run to failure), predict the RUL at the last cycle of each test unit; the
    same interface as :class:`enginehub.datasets.rul.RulModel`."""

    def __init__(self, config: SeqConfig | None = None) -> None:
        self.config = config or SeqConfig()
        self.columns = tuple(analysis.sensor_column(s) for s in self.config.sensors)
        self.prep: rul.Preprocessor | None = None
        self.multi_condition = False
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None
        self.models: list[dict[str, Any]] = []

    def _matrix(self, frame: pd.DataFrame) -> np.ndarray:
        """The columns of :func:`enginehub.datasets.rul.row_matrix` this network reads."""
        assert self.prep is not None
        cfg = self.config
        full, k = rul.row_matrix(frame, self.prep, multi_condition=self.multi_condition, history=cfg.history)
        keep = list(range(k))
        if cfg.cycle:
            keep.append(k)
        hist = len(rul.HISTORY_FEATURES) * k if cfg.history else 0
        if cfg.history:
            for name in cfg.history_keep:
                block = rul.HISTORY_FEATURES.index(name)
                keep.extend(range(k + 1 + block * k, k + 1 + (block + 1) * k))
        keep.extend(range(k + 1 + hist, full.shape[1]))
        return full[:, keep]

    def _rows(self, frame: pd.DataFrame) -> np.ndarray:
        assert self.mean is not None and self.std is not None
        z = (self._matrix(frame) - self.mean) / self.std
        return np.vstack([z, np.zeros((1, z.shape[1]))]).astype(np.float32)

    def fit(self, train: pd.DataFrame) -> SeqModel:
        require_jax()
        cfg = self.config
        labels = analysis.rul_labels(train, cfg.cap)
        self.prep = rul.Preprocessor.fit(train, self.columns, labels, health=cfg.health)
        self.multi_condition = cfg.condition_history and self.prep.scaler.conditions.n_conditions > 1
        full = self._matrix(train)
        self.mean = full.mean(axis=0)
        std = full.std(axis=0)
        self.std = np.where(std > 0, std, 1.0)
        rows = self._rows(train)
        units = train[analysis.UNIT].to_numpy(dtype="int64")
        index, _ = lab.window_index(units, cfg.window)
        targets = (np.asarray(labels, dtype="float64")[index[:, -1]] / cfg.cap).astype(np.float32)
        self.models = [train_network(rows, index, targets, cfg, seed) for seed in cfg.seeds]
        return self

    def _last(self, test: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not self.models or self.prep is None:
            raise RuntimeError("fit the model first")
        rows = self._rows(test)
        units = test[analysis.UNIT].to_numpy(dtype="int64")
        index, _ = lab.window_index(units, self.config.window, last_only=True)
        return units[index[:, -1]], rows, index

    def predict_last_each(self, test: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(units, (seeds, units) predictions of each seed's network alone), clipped to [0, cap]."""
        units, rows, index = self._last(test)
        cfg = self.config
        each = [
            rul.finish(predict_network(cfg.arch, p, rows, index) * cfg.cap, cfg.cap, cfg.snap)
            for p in self.models
        ]
        return units, np.stack(each)

    def predict_last(self, test: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(units, predicted RUL at each unit's last cycle): the seeds' average, clipped to [0, cap]."""
        units, each = self.predict_last_each(test)
        return units, rul.finish(each.mean(axis=0), self.config.cap, self.config.snap)


#: Weight of the gradient-boosted model in ``--model ensemble`` (the sequence model gets the rest): the
#: best of 0, 0.25, ..., 1 on held-out training units (``benchmarks/rul_validate.py --model ensemble``).
ENSEMBLE_GBM_WEIGHT = 0.75


class EnsembleModel:
    """``weight * gbm + (1 - weight) * seq``, seed by seed: both models are fitted with the same seeds."""

    def __init__(
        self,
        gbm: rul.ModelConfig | None = None,
        seq_config: SeqConfig | None = None,
        weight: float = ENSEMBLE_GBM_WEIGHT,
        snap: float | None = None,
    ) -> None:
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"weight must be in [0, 1], got {weight}")
        self.gbm = rul.RulModel(gbm)
        self.seq = SeqModel(seq_config)
        if len(self.gbm.config.seeds) != len(self.seq.config.seeds):
            raise ValueError("the two models need as many seeds each")
        self.weight = weight
        #: the combined predictions' settings: the sequence model's window, cap and sensors; ``snap``
        #: applies to the weighted average (the two models' own ``snap`` to their parts)
        self.config = replace(self.seq.config, snap=snap)

    def fit(self, train: pd.DataFrame) -> EnsembleModel:
        self.gbm.fit(train)
        self.seq.fit(train)
        return self

    def predict_last_each(self, test: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        units, a = self.gbm.predict_last_each(test)
        other, b = self.seq.predict_last_each(test)
        if not np.array_equal(units, other):  # pragma: no cover - both cut the same last windows
            raise analysis.AnalysisError("the two models predicted different units")
        return units, rul.finish(self.weight * a + (1.0 - self.weight) * b, self.config.cap, self.config.snap)

    def predict_last(self, test: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        units, each = self.predict_last_each(test)
        return units, rul.finish(each.mean(axis=0), self.config.cap, self.config.snap)
