"""params.yaml to typed, validated dataclasses.

Each stage reads only its own group, so a typo in one group never stops another stage. A bad
value raises `GamerecError` naming the key, the value and what is allowed, which the stage
runner prints as one line.
"""

from __future__ import annotations

import difflib
import os
import typing
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from gamerec.errors import GamerecError

PARAMS_FILE = Path("params.yaml")

T = TypeVar("T")


def _range(lo: float | None = None, hi: float | None = None, default: Any = MISSING) -> Any:
    """A dataclass field whose value must lie in [lo, hi]."""
    return field(default=default, metadata={"min": lo, "max": hi})


@dataclass(frozen=True)
class SyntheticParams:
    """Size and structure of the embedded synthetic Amazon 2018 data set."""

    seed: int = 0
    users: int = _range(10, default=4000)
    items: int = _range(10, default=1200)
    interactions: int = _range(10, default=60000)  # reviews written, before any filtering
    genres: int = _range(1, default=12)
    platforms: int = _range(1, default=5)
    brands: int = _range(1, default=60)
    start_year: int = _range(1996, 2030, default=2008)
    end_year: int = _range(1996, 2030, default=2018)
    genre_focus: float = _range(0.0, 1.0, default=0.85)  # share of a user's reviews in their genres
    platform_focus: float = _range(0.0, 1.0, default=0.85)  # share on the user's own platforms
    popularity_exponent: float = _range(0.0, 3.0, default=1.0)  # Zipf-like skew of item popularity
    also_view_size: int = _range(0, default=12)
    # share of also_view entries that follow the item's genre and popularity (the rest: any item, uniformly);
    # chosen so that users buy later as many of their items' also_view entries as on the real data
    also_view_taste: float = _range(0.0, 1.0, default=0.1)
    missing_price: float = _range(0.0, 1.0, default=0.33)
    missing_meta: float = _range(0.0, 1.0, default=0.02)  # reviewed items without a metadata line
    duplicate_meta: float = _range(0.0, 1.0, default=0.03)  # metadata lines written twice
    foreign_also_view: float = _range(0.0, 1.0, default=0.05)  # also_view ids not in the catalogue
    html_description: float = _range(0.0, 1.0, default=0.2)

    def __post_init__(self) -> None:
        if self.start_year > self.end_year:
            raise GamerecError(
                f"params: synthetic.start_year = {self.start_year} is after "
                f"synthetic.end_year = {self.end_year}; expected start_year <= end_year"
            )


@dataclass(frozen=True)
class TextParams:
    """Tokenizer and vocabulary of item descriptions (title plus description)."""

    min_count: int = _range(1, default=2)
    max_vocab: int = _range(1, default=20000)
    max_tokens: int = _range(1, default=64)  # tokens kept per item, in text order


@dataclass(frozen=True)
class PrepareParams:
    """How raw files become encoded, filtered and split interactions."""

    raw_dir: str = "data/raw/synthetic"
    min_interactions: int = _range(1, default=5)  # k of the k-core, for users and items alike
    split: Literal["leave_last_out", "global_time"] = "leave_last_out"
    val_quantile: float = _range(0.0, 1.0, default=0.8)  # global_time: val starts at this time quantile
    test_quantile: float = _range(0.0, 1.0, default=0.9)  # global_time: test starts here
    max_bad_fraction: float = _range(0.0, 1.0, default=0.01)  # corrupt lines tolerated per file
    text: TextParams = field(default_factory=TextParams)

    def __post_init__(self) -> None:
        relative = Path(self.raw_dir)
        if not relative.is_absolute() and os.path.normpath(relative).split(os.sep)[0] == "..":
            raise GamerecError(
                f"params: prepare.raw_dir = {self.raw_dir!r} points outside the repository; "
                "use a folder inside it (e.g. data/raw/<name>) or an absolute path"
            )
        if self.val_quantile >= self.test_quantile:
            raise GamerecError(
                f"params: prepare.val_quantile = {self.val_quantile} must be below "
                f"prepare.test_quantile = {self.test_quantile}"
            )


@dataclass(frozen=True)
class OutBatchParams:
    """Random negatives from the training catalogue."""

    negatives: int = _range(1, default=4)  # per positive
    distribution: Literal["uniform", "popularity"] = "uniform"
    alpha: float = _range(0.0, 2.0, default=0.75)  # popularity**alpha when distribution=popularity
    balance: Literal["weight", "oversample", "none"] = "weight"  # how positives match negatives


@dataclass(frozen=True)
class InBatchParams:
    """Batch softmax: the batch's other positives are the negatives."""

    mixed_negatives: int = _range(0, default=0)  # extra uniform items shared by a batch (0 = off)


@dataclass(frozen=True)
class AlsoViewParams:
    """Hard negatives from the also_view lists of each positive item."""

    negatives: int = _range(1, default=4)  # cap of hard negatives per positive
    top_up: bool = True  # fill short lists with uniform negatives up to `negatives`
    easy: int = _range(0, default=0)  # uniform negatives added to every positive, beside the hard ones
    balance: Literal["weight", "oversample", "none"] = "weight"


@dataclass(frozen=True)
class MinedParams:
    """Negatives the model being trained ranks high for the user, past its very top (see gamerec.mining)."""

    negatives: int = _range(1, default=4)  # per positive
    skip_top: int = _range(0, default=10)  # ranks left out at the top, where unlabelled positives live
    pool: int = _range(1, default=200)  # ranks after those that negatives are drawn from, uniformly
    refresh: int = _range(1, default=1)  # epochs between two redraws (the first epoch: uniform negatives)
    balance: Literal["weight", "oversample", "none"] = "weight"


@dataclass(frozen=True)
class SamplingParams:
    """Params group `sampling`, shared by every sampler; each sampler's own group is `sampling.<name>`."""

    seed: int = 0  # with the sampler's name, seeds its random stream
    memory_mb: float = _range(1e-6, default=256.0)  # cap of the also_view join's working arrays


@dataclass(frozen=True)
class ModelParams:
    """Params group `model`: the two-tower architecture, saved in every checkpoint (gamerec.model)."""

    dim: int = _range(1, default=128)
    # MLP hidden layer sizes; [] = one linear layer per tower
    hidden: list[int] = field(default_factory=list, metadata={"min": 1, "empty": True})
    dropout: float = _range(0.0, 0.95, default=0.0)  # between hidden layers
    normalize: bool = True
    temperature: float = _range(1e-4, 100.0, default=0.15)
    history: int = _range(0, default=20)  # recent train items pooled into the user tower (0 = off)
    user_id: bool = False  # embed the user id in the user tower (false: history only)
    causal: bool = True  # train on the history before each positive only (next-item prediction)
    pooling: Literal["mean", "recency"] = "recency"  # pool tower: recency = a learned weight per recency rank
    # pool: a weighted mean of the history's item embeddings; attention: causal self-attention over them
    user_tower: Literal["pool", "attention"] = "pool"
    layers: int = _range(1, 12, default=2)  # attention tower: self-attention blocks
    heads: int = _range(1, default=2)  # attention tower: heads per block (dim must divide by it)
    attention_dropout: float = _range(0.0, 0.9, default=0.2)  # attention tower: inside its blocks
    input_dropout: float = _range(0.0, 0.9, default=0.0)  # attention tower: on its input tokens (SASRec's embedding dropout)
    # attention tower: a learned bias per distance added to every attention logit (the pool tower's recency
    # weights, as a prior inside attention; translation-invariant, so one-pass training and evaluation agree)
    recency_bias: bool = False
    # the initial weights: torch = each module's own (embedding rows N(0, 1)); normal = every linear and
    # embedding weight N(0, 0.02), biases 0 (SASRec's and BERT's)
    init: Literal["torch", "normal"] = "torch"
    # attention tower: the blocks' layout (gamerec.model.BLOCKS); pre_norm = norm before each sublayer, ReLU,
    # 2x feed-forward, a norm on the output; sasrec = SASRec's reference layout: a norm on the input, norm
    # after each residual sum, GELU, 4x feed-forward
    block: Literal["pre_norm", "sasrec"] = "pre_norm"
    # the item tower (gamerec.model.ITEM_TOWERS): features = id, brand, price and description embeddings
    # through a linear layer (or MLP); id = the item id's embedding alone (SASRec's; no features to learn from);
    # id_plus_features = the id's embedding plus a linear layer (or MLP) over brand, price and description
    item_tower: Literal["features", "id", "id_plus_features"] = "features"

    def __post_init__(self) -> None:
        if not self.user_id and self.history == 0:
            raise GamerecError(
                "params: model.user_id = false needs model.history > 0; the user tower would have no input"
            )
        if self.user_tower == "attention" and (self.user_id or self.history == 0 or self.dim % self.heads):
            raise GamerecError(
                f"params: model.user_tower = attention needs model.history > 0, model.user_id = false and "
                f"model.dim divisible by model.heads; got history {self.history}, user_id {str(self.user_id).lower()}, "
                f"dim {self.dim}, heads {self.heads}"
            )


@dataclass(frozen=True)
class TrainParams:
    """Params group `train`: the optimisation loop."""

    seed: int = 0
    epochs: int = _range(1, default=30)
    batch_size: int = _range(2, default=1024)
    lr: float = _range(0.0, 10.0, default=0.02)
    dense_lr: float = _range(0.0, 10.0, default=0.0)  # every other dense weight (linear layers, recency); 0 = lr
    attention_lr: float = _range(0.0, 10.0, default=0.001)  # the attention tower's own weights (its blocks)
    # adam: every weight moves every step; lazy_adam: an embedding row moves only in the batches
    # that use it (sparse gradients), so a step costs the batch, not the catalogue
    optimizer: Literal["adam", "lazy_adam"] = "lazy_adam"
    weight_decay: float = _range(0.0, 1.0, default=0.0)  # adam only
    patience: int = _range(1, default=3)  # epochs without a better val recall@k before stopping
    k: int = _range(1, default=10)  # early stopping watches recall@k of validation users
    # the loss, chosen apart from the negatives: auto = the sampler's own (gamerec.losses)
    loss: Literal["auto", "bce", "sampled_softmax", "batch_softmax", "exact_softmax"] = "auto"
    logq: bool = True  # softmax losses: subtract each sampled column's log sampling probability
    mask_seen: bool = True  # softmax/batch columns: leave out every item the row's user has, not only its positive
    eval_memory_mb: float = _range(1e-6, default=512.0)  # cap of the score matrix while ranking
    # scores of the validation ranking: bfloat16 is faster; ranks are exact either way (gamerec.retrieval)
    eval_precision: Literal["bfloat16", "float32"] = "float32"
    val_users: int = _range(0, default=50_000)  # validation users ranked for early stopping (0 = all)
    resume: bool = True  # continue an interrupted run from its last finished epoch
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA when PyTorch sees a GPU, else CPU
    processes: int = _range(1, default=1)  # > 1: torchrun starts this many data-parallel processes

    def __post_init__(self) -> None:
        if self.optimizer == "lazy_adam" and self.weight_decay > 0:
            raise GamerecError(
                "params: train.weight_decay > 0 needs train.optimizer = adam; lazy_adam's sparse "
                "embedding updates have no weight decay"
            )


@dataclass(frozen=True)
class AlsGrid:
    """The points ALS is fit at: every combination of these (the best on validation recall is kept)."""

    factors: list[int] = field(default_factory=lambda: [32, 128], metadata={"min": 1})
    regularization: list[float] = field(default_factory=lambda: [1.0], metadata={"min": 0.0})
    alpha: list[float] = field(default_factory=lambda: [10.0], metadata={"min": 0.0})


@dataclass(frozen=True)
class AlsParams:
    """Params group `evaluate.als`: the ALS baseline and the grids it is tuned over on validation."""

    enabled: bool = True
    grid: Literal["small", "full"] = "small"  # which grid below ALS is tuned over
    small: AlsGrid = field(default_factory=AlsGrid)  # the winners of the full grid on the data sets we know
    full: AlsGrid = field(default_factory=lambda: AlsGrid([32, 64, 128], [0.01, 0.1, 1.0], [1.0, 10.0]))
    iterations: int = _range(1, default=15)
    seed: int = 0

    @property
    def points(self) -> AlsGrid:
        """The chosen grid."""
        return self.small if self.grid == "small" else self.full


@dataclass(frozen=True)
class BootstrapParams:
    """Params group `evaluate.bootstrap`: resampling test users for the intervals of the headline metrics."""

    samples: int = _range(10, default=1000)
    seed: int = 0


@dataclass(frozen=True)
class EvaluateParams:
    """Params group `evaluate`: the fixed test protocol, the same for every sampler."""

    seed: int = 0  # draws the sampled negatives of the AUC/accuracy pairs
    negatives: int = _range(1, default=100)  # never-interacted items per test positive
    pair_users: int = _range(0, default=50_000)  # users (seeded sample) whose pairs the auc and accuracy score (0 = all)
    k: list[int] = field(default_factory=lambda: [10, 50], metadata={"min": 1})  # cutoffs of recall/ndcg/hit_rate
    curve_max_k: int = _range(1, default=100)  # recall@K plot for K = 1..curve_max_k
    # what scorers know of a test user: train and val items (default), or train only
    known_before_test: Literal["train+val", "train"] = "train+val"
    memory_mb: float = _range(1e-6, default=512.0)  # cap of each chunk of the user x catalogue score matrix
    # the ranking's scores: bfloat16 is faster; ranks and metrics are exact and the same either way
    precision: Literal["bfloat16", "float32"] = "float32"
    device: Literal["auto", "cpu", "cuda"] = "auto"  # the model's embeddings and the ranking; auto: CUDA if PyTorch sees one
    val_users: int = _range(0, default=50_000)  # validation users ranked to tune ALS (0 = all)
    ablation_users: int = _range(0, default=10_000)  # of those, ranked once per zeroed feature (0 = all of them)
    als: AlsParams = field(default_factory=AlsParams)
    bootstrap: BootstrapParams = field(default_factory=BootstrapParams)


@dataclass(frozen=True)
class ExportParams:
    """Params group `export`: what serving reads, and the nearest-neighbour index over the items."""

    index: Literal["auto", "flat", "hnsw"] = "auto"  # auto: exact up to flat_max_items, HNSW above
    flat_max_items: int = _range(1, default=50_000)
    hnsw_m: int = _range(4, 256, default=32)  # graph links per item: more = better recall, bigger index
    ef_construction: int = _range(8, default=200)  # candidates while building the graph
    ef_search: int = _range(1, default=128)  # HNSW candidates per query (at least k)
    # what serving knows of a user (history for the user tower, items never recommended back);
    # train+val is what the evaluation's test ranking knows
    known: Literal["train+val+test", "train+val"] = "train+val+test"
    k: int = _range(1, default=10)  # recall@k of each index against exact search
    eval_users: int = _range(1, default=10_000)  # test users (seeded sample) the recall and latency are measured on
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"  # the model's embeddings and the exact search; auto: CUDA if seen


@dataclass(frozen=True)
class TuneParams:
    """Params group `tune`: what `gamerec tune` searches on validation through DVC experiments."""

    name: str = "tune"  # experiments are named <name>-1, <name>-2, ...
    target: str = "train"  # the stage each point runs (train: validation recall, test never computed)
    jobs: int = _range(1, default=2)  # experiments at once (the stages share the cores)
    budget_minutes: float = _range(0.1, default=120.0)  # past it, what runs is stopped and what waits dropped
    apply: bool = True  # dvc exp apply the best point
    # param -> the values to try; every combination is one experiment
    grid: dict[str, list] = field(default_factory=lambda: {"model.temperature": [0.1, 0.2], "train.lr": [0.005, 0.02]})


@dataclass(frozen=True)
class Paths:
    """Params group `paths`: where the stages read and write, which dvc.yaml's deps and outs name too.

    No defaults: each path is written once, in params.yaml, and dvc.yaml interpolates it.
    """

    synthetic: str  # the embedded data set's raw files
    prepared: str  # prepare's folder (gamerec.prepared reads it)
    negatives: str  # one folder per sampler
    chosen_sampler: str  # the checked `sampler` param, which train depends on
    model: str  # the trained checkpoint
    train_state: str  # an unfinished train's last epoch (not a DVC output)
    live: str  # DVCLive's folder of training curves
    serving: str  # export's folder: what `gamerec recommend/serve` read
    plots: str  # evaluate's curves
    train_metrics: str  # the headline metrics, committed to git: `dvc metrics diff` needs no remote
    eval_metrics: str
    data_report: str  # the stages' reports: outputs, not metrics
    sampling_reports: str  # one <sampler>.json each
    train_report: str
    eval_report: str
    ranks: str  # each held-out item's rank under the model and each baseline: `gamerec compare` reads it
    ablation_report: str
    export_report: str


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _convert(key: str, value: Any, tp: Any, meta: typing.Mapping[str, Any]) -> Any:
    """Check one value against its declared type and range; return it converted."""
    if is_dataclass(tp):
        return parse(tp, value, key)
    if typing.get_origin(tp) is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, list) or (not value and not meta.get("empty")):
            raise GamerecError(f"params: {key} = {value!r} is not valid; expected a non-empty list of {_type_name(inner)}s")
        return [_convert(f"{key}[{i}]", v, inner, meta) for i, v in enumerate(value)]
    if typing.get_origin(tp) is dict:
        if not isinstance(value, dict) or not value or not all(isinstance(v, list) and v for v in value.values()):
            raise GamerecError(f"params: {key} = {value!r} is not valid; expected a mapping of params to non-empty lists")
        return {str(k): v for k, v in value.items()}
    if typing.get_origin(tp) is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise GamerecError(f"params: {key} = {value!r} is not valid; expected {_type_name(tp)}")
        return value
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
    }.get(tp, True)
    if not ok:
        raise GamerecError(f"params: {key} = {value!r} is not valid; expected {_type_name(tp)}")
    if tp is float:
        value = float(value)
    lo, hi = meta.get("min"), meta.get("max")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f"between {lo} and {hi}" if lo is not None and hi is not None else (
            f"at least {lo}" if lo is not None else f"at most {hi}"
        )
        raise GamerecError(f"params: {key} = {value!r} is out of range; expected {bounds}")
    return value


def parse(cls: type[T], raw: Any, section: str, subgroups: typing.Collection[str] = ()) -> T:
    """Build dataclass `cls` from the mapping `raw` (the params group `section`), validating it.

    Missing keys take the dataclass default (a field without one is an error); unknown keys
    are errors with a suggestion. Keys in `subgroups` are groups of their own, parsed by
    their owners (`sampling.<sampler>`), and skipped here.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise GamerecError(f"params: {section} must be a mapping of keys to values, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    for key in raw:
        if key not in names and key not in subgroups:
            known = [*names, *subgroups]
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"; did you mean {section}.{close[0]}?" if close else ""
            raise GamerecError(
                f"params: unknown key {section}.{key}{hint} (known: {', '.join(known)})"
            )
    required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
    absent = [name for name in required if name not in raw]
    if absent:
        raise GamerecError(f"params: {section} lacks {', '.join(f'{section}.{name}' for name in absent)}")
    values = {
        f.name: _convert(f"{section}.{f.name}", raw[f.name], hints[f.name], f.metadata)
        for f in fields(cls)
        if f.name in raw
    }
    return cls(**values)


def read_params(path: Path = PARAMS_FILE) -> dict[str, Any]:
    """Read params.yaml as a plain mapping, with a one-line error if it is missing or bad."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GamerecError(f"{path}: not found; run the stage from the repository root") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise GamerecError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict):
        raise GamerecError(f"{path}: expected a mapping of param groups, got {type(data).__name__}")
    return data


def load(cls: type[T], section: str, path: Path = PARAMS_FILE) -> T:
    """Read and validate one params group of params.yaml."""
    return parse(cls, read_params(path).get(section), section)
