"""Typed ``params.yaml``: one pydantic model per section, loaded and checked once.

Every knob of the pipeline and its default lives here (``params.yaml`` sets values, the
code never supplies a fallback of its own). Unknown or misspelt keys anywhere fail before
any work, with the dotted key and a did-you-mean; wrong types and out-of-range values
name the key, the value and what is expected. ``docs/params.md`` is generated from these
models (``python -m pipelines.config --markdown``).
"""

from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from features.errors import PlatformError

DEFAULT_PARAMS = Path("params.yaml")


class ParamsError(PlatformError, ValueError):
    """params.yaml has an unknown key, a wrong type or a value out of range."""


def did_you_mean(key: str, options: list[str] | set[str]) -> str:
    close = difflib.get_close_matches(key, sorted(options), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else f"; expected one of {sorted(options)}"


def deep_merge(base: dict[str, Any], override: dict[str, Any] | None) -> dict[str, Any]:
    """``override`` over ``base``, merging nested mappings key by key (the only deep merge)."""
    out = copy.deepcopy(base)
    for k, v in (override or {}).items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


class Section(BaseModel):
    """A params section: unknown keys are errors with a did-you-mean."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())
    _unknown: ClassVar[str] = "unknown key"

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            fields = {f.alias or n for n, f in cls.model_fields.items()}
            for key in data:
                if key not in fields:
                    raise PydanticCustomError(
                        "unknown_key",
                        cls._unknown + "{hint}",
                        {"key": str(key), "hint": did_you_mean(str(key), fields)},
                    )
        return data


# ---------------------------------------------------------------------------------------- demo


class DemoParams(Section):
    """The built-in demo catalog (stage ``demo``)."""

    n_items: int = Field(2000, gt=0)
    n_users: int = Field(2000, gt=0)
    n_interactions: int = Field(50000, gt=0)
    image_size: int = Field(64, ge=8)
    seed: int | None = None  # null: the top-level seed


# -------------------------------------------------------------------------------------- ingest


class KCore(Section):
    users: int = Field(0, ge=0)
    items: int = Field(0, ge=0)


class SplitParams(Section):
    method: Literal["random_ratio", "labels", "temporal"] = "random_ratio"
    valid_ratio: float = Field(0.1, ge=0, lt=1)
    test_ratio: float = Field(0.1, ge=0, lt=1)
    leave_out: int = Field(1, ge=1)
    seed: int | None = None  # null: the top-level seed


class DownloadParams(Section):
    """Image download (``mmrec download`` or ``enabled``): http(s) only, every redirect hop
    re-checked, private/loopback/link-local/multicast addresses refused."""

    enabled: bool = False
    rate_per_second: float = Field(2.0, gt=0)
    retries: int = Field(3, ge=0)
    backoff_seconds: float = Field(1.0, ge=0)
    timeout_seconds: float = Field(20, gt=0)  # per socket operation
    deadline_seconds: float = Field(60, gt=0)  # whole file, however slowly it drips
    max_bytes: int = Field(20_000_000, gt=0)  # per file
    max_redirects: int = Field(5, ge=0)
    content_types: list[str] = [
        "image/jpeg",
        "image/png",
        "image/webp",
        "image/gif",
        "image/bmp",
        "image/tiff",
    ]
    allow_private_addresses: bool = False  # tests against a local server only
    user_agent: str = "mmrec-platform"


class IngestParams(Section):
    min_rating: float | None = None
    negative_ratings: list[float] = []
    kcore: KCore = KCore()
    keep_items: Literal["all", "interacted"] = "all"
    id_order: Literal["natural", "lexicographic"] = "natural"
    drop_cold_users: bool = True
    split: SplitParams = SplitParams()
    download: DownloadParams = DownloadParams()


SOURCES = ("generic", "demo", "mmrec", "recbole", "split_json", "amazon")


class DataParams(Section):
    """What ingest reads; ``ingest`` here overrides the ingest section for this dataset."""

    profile: str = "demo"
    source: Literal["generic", "demo", "mmrec", "recbole", "split_json", "amazon"] = "generic"
    items: str | None = None
    interactions: str = "data/demo/interactions.csv"
    images: str | None = None  # the folder image_path values point into (none: no images)
    options: dict[str, Any] = {}
    ingest: dict[str, Any] = {}

    @model_validator(mode="after")
    def _adapter_options(self) -> DataParams:
        from pipelines.adapters import adapter_defaults

        defaults = adapter_defaults(self.source)
        for key in self.options:
            if key not in defaults:
                raise PydanticCustomError(
                    "unknown_key",
                    "unknown option of source '{source}'{hint}",
                    {
                        "key": f"options.{key}",
                        "source": self.source,
                        "hint": did_you_mean(key, set(defaults)),
                    },
                )
        return self


# ------------------------------------------------------------------------------------- extract


class BeamParams(Section):
    runner: str = "DirectRunner"
    options: dict[str, Any] = {"direct_num_workers": 1, "direct_running_mode": "in_memory"}
    args: list[str] = []


class _Feature(Section):
    """Keys every feature has; the rest are its encoder's options."""

    input: Literal["text", "image", "item_id"] | None = None  # null: text (item_id for precomputed)
    fields: list[str] = ["title", "description"]

    def encoder_spec(self) -> dict[str, Any]:
        """``{encoder: <name>, ...options}`` for ``features.encoders.build_encoder``."""
        return self.model_dump(exclude={"input", "fields"}, exclude_none=False)


class SentenceFeature(_Feature):
    encoder: Literal["sentence-transformers"]
    model: str = "all-MiniLM-L6-v2"
    normalize: bool = True
    max_seq_length: int | None = Field(None, gt=0)
    device: str = "cpu"
    inner_batch_size: int = Field(64, gt=0)


class ClipFeature(_Feature):
    encoder: Literal["open_clip"]
    model: str = "ViT-B-32"
    pretrained: str | None = "openai"  # a tag or a local checkpoint path
    allow_random_init: bool = False
    normalize: bool = True
    device: str = "cpu"
    model_config_file: str | None = Field(None, alias="model_config")
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, protected_namespaces=())

    def encoder_spec(self) -> dict[str, Any]:
        spec = self.model_dump(exclude={"input", "fields", "model_config_file"})
        spec["model_config"] = self.model_config_file
        return spec


class LlmFeature(_Feature):
    encoder: Literal["hf-llm"]
    model: str
    pooling: Literal["mean", "last"] = "mean"
    prompt: str = "{text}"
    max_length: int = Field(512, gt=0)
    normalize: bool = True
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    device: str = "cpu"
    trust_remote_code: bool = False


class PrecomputedFeature(_Feature):
    encoder: Literal["precomputed"]
    path: str
    ids: str | None = None
    id_column: str = "item_id"
    vector_column: str = "embedding"
    normalize: bool = False


FeatureSpec = Annotated[
    SentenceFeature | ClipFeature | LlmFeature | PrecomputedFeature, Field(discriminator="encoder")
]


class ExtractParams(Section):
    min_batch_size: int = Field(64, gt=0)  # = max: fixed batches, byte-identical vectors run to run
    max_batch_size: int = Field(64, gt=0)
    max_image_pixels: int = Field(50_000_000, gt=0)  # per image (decompression bombs)
    max_image_bytes: int = Field(50_000_000, gt=0)  # per file, enforced on the read itself
    max_batch_pixels: int = Field(100_000_000, gt=0)  # decoded pixels held per batch (memory bound)
    image_formats: list[str] = ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"]  # checked before decoding
    max_text_chars: int = Field(20_000, gt=0)
    text_separator: str = ". "
    torch_threads: Literal["auto"] | Annotated[int, Field(gt=0)] = "auto"
    incremental: bool = True
    keep_previous: bool = True
    reshuffle: Literal["auto"] | bool = "auto"
    row_group_mb: int = Field(4, gt=0)
    compression: Literal["zstd", "snappy", "gzip", "lz4", "brotli", "none"] = "zstd"
    progress: bool = True
    beam: BeamParams = BeamParams()
    features: dict[str, FeatureSpec] = {}

    @model_validator(mode="after")
    def _batch_bounds(self) -> ExtractParams:
        if self.min_batch_size > self.max_batch_size:
            raise ValueError(f"min_batch_size {self.min_batch_size} > max_batch_size {self.max_batch_size}")
        return self

    def modalities(self) -> set[str]:
        """Inputs some configured feature reads (``text``, ``image``, ``item_id``)."""
        return {feature_input(f) for f in self.features.values()}


def feature_input(f: _Feature) -> str:
    if f.input is not None:
        return f.input
    return "item_id" if isinstance(f, PrecomputedFeature) else "text"


# --------------------------------------------------------------------------------------- graph


class GraphParams(Section):
    """kNN search (faiss): exact flat inner product, or an IVF/HNSW index past a size."""

    k: int = Field(10, gt=0)
    chunk_size: int = Field(1024, gt=0)
    self_loops: bool = True
    method: Literal["auto", "exact", "ivf", "hnsw"] = "auto"
    exact_max_items: int = Field(250_000, gt=0)
    nlist: int = Field(0, ge=0)
    nprobe: int = Field(32, gt=0)
    train_size: int = Field(0, ge=0)
    hnsw_m: int = Field(32, gt=0)
    ef_construction: int = Field(80, gt=0)
    ef_search: int = Field(128, gt=0)
    recall_sample: int = Field(1000, gt=0)
    threads: int = Field(0, ge=0)


# -------------------------------------------------------------------------------- semantic IDs


class RqVaeParams(Section):
    """RQ-VAE (TIGER): MLP encoder/decoder around a residual quantiser of ``latent_dim``."""

    latent_dim: int = Field(32, gt=0)
    hidden: list[Annotated[int, Field(gt=0)]] = [512, 256, 128]
    epochs: int = Field(200, gt=0)
    batch_size: int = Field(1024, gt=0)
    lr: float = Field(1e-3, gt=0)
    commitment: float = Field(0.25, ge=0)
    dead_code_restart: bool = True


class SemanticIdTable(Section):
    """One semantic-ID table: residual quantisation of a source's item vectors."""

    source: str  # "features/<feature>" (content IDs) or "embeddings/<model>" (collaborative IDs)
    method: Literal["rq_kmeans", "rq_vae"] = "rq_kmeans"
    levels: int = Field(3, gt=0, le=8)
    codebook_size: int = Field(256, gt=1)
    seed: int | None = None  # null: the top-level seed
    collisions: Literal["suffix", "sinkhorn"] = "suffix"
    balanced: bool = True  # rq_kmeans: OneRec's balanced k-means (N / K items per code); false: GRID's Lloyd
    kmeans_iters: int = Field(25, gt=0)
    refit: bool = False  # true: fit new codebooks even when the previous table's still apply
    rq_vae: RqVaeParams = RqVaeParams()

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        kind, _, name = v.partition("/")
        if kind not in ("features", "embeddings") or not name:
            raise ValueError(f"expected 'features/<feature>' or 'embeddings/<model>', got {v!r}")
        return v


class SemanticIdsParams(Section):
    tables: dict[str, SemanticIdTable] = {}


# ------------------------------------------------------------------------------------ validate


class Level(Section):
    warn: float | None = None
    fail: float | None = None


class DriftParams(Section):
    enabled: bool = True
    min_unchanged_cosine: Level = Level(warn=0.9999, fail=0.999)
    norm_shift: Level = Level(warn=0.02, fail=0.1)
    pair_cosine_shift: Level = Level(warn=0.05, fail=0.15)
    added_share: Level = Level(warn=0.2)
    removed_share: Level = Level(warn=0.1, fail=0.5)
    changed_share: Level = Level(warn=0.2)


class Thresholds(Section):
    """Thresholds of the suites; ``feature_overrides`` may set any of them per feature."""

    sample_size: int = Field(5, ge=0)
    max_cold_user_share: float = Field(0.0, ge=0, le=1)
    max_cold_item_share: float = Field(0.05, ge=0, le=1)
    min_text_share: float = Field(0.95, ge=0, le=1)
    min_image_share: float = Field(0.95, ge=0, le=1)
    min_norm: float = Field(1e-6, ge=0)
    norm_tolerance: float = Field(1e-3, gt=0)
    max_duplicate_share: float = Field(0.01, ge=0, le=1)
    max_mean_pair_cosine: float = Field(0.9, ge=-1, le=1)
    pair_sample: int = Field(2000, gt=0)
    similarity_tolerance: float = Field(1e-3, ge=0)
    allow_self_loops: bool | None = None
    max_reject_share: float = Field(0.05, ge=0, le=1)  # rejected items / items of a feature table
    allow_random_weights: bool = False  # a table made with random encoder weights fails unless true
    drift: DriftParams = DriftParams()


class SemanticIdThresholds(Section):
    """Gate of semantic-ID tables: full IDs unique, codes in range, and these limits."""

    max_collision_rate: float = Field(0.1, ge=0, le=1)  # (N - unique code tuples) / N before the suffix
    min_codebook_use: float = Field(0.5, ge=0, le=1)  # used codes / codebook size, every level


class ValidateParams(Thresholds):
    semantic_ids: SemanticIdThresholds = SemanticIdThresholds()
    feature_overrides: dict[str, dict[str, Any]] = {}

    @field_validator("feature_overrides")
    @classmethod
    def _overrides(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name, override in v.items():
            try:
                Thresholds.model_validate(deep_merge(Thresholds().model_dump(), override))
            except ValidationError as e:
                key, _, msg = _messages(e)[0].partition(": ")
                raise PydanticCustomError("nested", "{msg}", {"key": f"{name}.{key}", "msg": msg}) from None
        return v

    def for_feature(self, name: str) -> Thresholds:
        """Thresholds of one feature table (its override deep-merged over the defaults)."""
        base = self.model_dump(exclude={"feature_overrides", "semantic_ids"})
        return Thresholds.model_validate(deep_merge(base, self.feature_overrides.get(name)))


# --------------------------------------------------------------------------------------- train


class RayParams(Section):
    address: str | None = None
    storage_path: str = ".ray_results"
    max_failures: int = Field(2, ge=0)
    cpus_per_worker: int = Field(1, gt=0)
    num_cpus: int | None = Field(None, gt=0)
    resume: bool = False
    checkpoints_to_keep: int = Field(1, gt=0)


class CommonParams(Section):
    """Training-loop knobs every model shares; a model's section may override any of them."""

    epochs: int = Field(60, gt=0)
    batch_size: int = Field(2048, gt=0)
    lr: float = Field(1e-3, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    patience: int = Field(20, gt=0)
    eval_every: int = Field(1, gt=0)
    report_every: int = Field(10, gt=0)
    checkpoint_every: int = Field(10, gt=0)
    checkpoint_on_best: bool = False
    device: Literal["cpu", "cuda"] = "cpu"
    valid_metric: str = "recall@20"
    eval_chunk_size: int = Field(2048, gt=0)

    @field_validator("valid_metric")
    @classmethod
    def _metric(cls, v: str) -> str:
        name, _, k = v.partition("@")
        if name not in ("recall", "ndcg", "precision", "map", "hit") or not k.isdigit():
            raise ValueError(f"expected <recall|ndcg|precision|map|hit>@K, got {v!r}")
        return v


def _type_ok(value: Any, default: Any) -> bool:
    if default is None:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(default, str):
        return isinstance(value, str)
    if isinstance(default, dict):
        return isinstance(value, dict)
    if isinstance(default, list | tuple):
        return isinstance(value, list | tuple)
    return True


def check_hparams(model: str, section: dict[str, Any], where: str) -> None:
    """A model section's keys are the model's hyper-parameters or common keys; a list is a
    grid axis (each value is checked)."""
    from training.models import model_names  # noqa: F401  (registers the models)
    from training.models.base import model_class

    defaults = model_class(model).defaults
    common = CommonParams.model_fields
    known = set(defaults) | set(common)
    for key, value in section.items():
        if key not in known:
            raise PydanticCustomError(
                "unknown_key",
                "unknown hyper-parameter of model '{model}'{hint}",
                {"key": f"{where}.{key}", "model": model, "hint": did_you_mean(key, known)},
            )
        # A list is a grid axis, except for list-valued hyper-parameters (matryoshka: [8, 16]):
        # their axis is a list of lists (as training.selection.expand_grid reads it).
        list_valued = isinstance(defaults.get(key), list)
        axis = isinstance(value, list) and (
            not list_valued or (bool(value) and all(isinstance(v, list) for v in value))
        )
        values = value if axis else [value]
        for v in values:
            if key in common:
                try:
                    CommonParams.model_validate({key: v})
                except ValidationError as e:
                    msg = _messages(e)[0].partition(": ")[2]
                    raise PydanticCustomError(
                        "nested", "{msg}", {"key": f"{where}.{key}", "msg": msg}
                    ) from None
            elif not _type_ok(v, defaults[key]):
                raise PydanticCustomError(
                    "wrong_type",
                    "expected {expected} like the default {default}, got {value}",
                    {
                        "key": f"{where}.{key}",
                        "expected": type(defaults[key]).__name__,
                        "default": defaults[key],
                        "value": v,
                    },
                )
            elif key in model_class(model).hparam_checks:
                why = model_class(model).hparam_checks[key](v, {**defaults, **section})
                if why:
                    raise PydanticCustomError("nested", "{msg}", {"key": f"{where}.{key}", "msg": why})


class WarmStartParams(Section):
    """Warm-started retraining (``train.warm_start``): a snapshot's model starts from the
    previous snapshot's checkpoint (``models/<model>/model.pt``), rows mapped by raw id.
    Cold training when off, when there is no usable checkpoint or the model's
    hyper-parameters or feature tables changed (the stage logs why)."""

    enabled: bool = False
    epochs: int = Field(10, gt=0)  # the warm run's own epoch budget (instead of train.common.epochs)
    patience: int = Field(3, gt=0)  # and its early stopping (instead of train.common.patience)
    init: Literal["content", "mean", "random"] = "content"  # rows of new items (users: mean/random)
    content_k: int = Field(10, gt=0)  # content-nearest carried items a new item's rows average


class SequentialParams(Section):
    """The sequential task's protocol (``train.task: sequential``, docs/sequential.md)."""

    # false: RecBole's protocol for sequential models (only the padding item is excluded);
    # true: the query history's items are masked from the ranking.
    mask_history: bool = False


class TrainParams(Section):
    """``train``: the loop, Ray, and one section per model (``train.<model>``)."""

    # general: top-K from the train items (train items masked); sequential: next item of an
    # ordered history (needs ingest.split.method temporal and sequential models, e.g. sasrec).
    task: Literal["general", "sequential"] = "general"
    sequential: SequentialParams = SequentialParams()
    backend: Literal["ray", "local"] = "ray"
    workers: int = Field(2, gt=0)
    threads: int | None = Field(None, gt=0)
    seed: int = 42
    seeds: list[int] | None = None
    models: list[str] = ["bpr", "lightgcn", "freedom"]
    ray: RayParams = RayParams()
    common: CommonParams = CommonParams()
    warm_start: WarmStartParams = WarmStartParams()
    grids: dict[str, dict[str, Any]] = {}
    hparams: dict[str, dict[str, Any]] = {}  # filled from the train.<model> sections

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        from training.models import model_names

        names = set(model_names())
        fields = set(cls.model_fields) - {"hparams"}
        out: dict[str, Any] = {"hparams": {}}
        for key, value in data.items():
            if key in fields:
                out[key] = value
            elif key in names:
                if value is not None and not isinstance(value, dict):
                    raise PydanticCustomError(
                        "wrong_type",
                        "expected a mapping of hyper-parameters, got {value}",
                        {"key": key, "value": value},
                    )
                check_hparams(key, value or {}, key)
                out["hparams"][key] = dict(value or {})
            else:
                raise PydanticCustomError(
                    "unknown_key",
                    "unknown key (not a setting nor a registered model){hint}",
                    {"key": str(key), "hint": did_you_mean(str(key), fields | names)},
                )
        return out

    @model_validator(mode="after")
    def _models(self) -> TrainParams:
        from training.models import model_names

        for name in self.models:
            if name not in model_names():
                raise PydanticCustomError(
                    "unknown_model",
                    "unknown model '{name}'{hint}",
                    {"key": "models", "name": name, "hint": did_you_mean(name, set(model_names()))},
                )
        for name, grid in self.grids.items():
            if name not in model_names():
                raise PydanticCustomError(
                    "unknown_model",
                    "unknown model{hint}",
                    {"key": f"grids.{name}", "hint": did_you_mean(name, set(model_names()))},
                )
            check_hparams(name, grid, f"grids.{name}")
        return self

    def section(self, model: str) -> dict[str, Any]:
        """The ``train.<model>`` section (empty when params.yaml has none)."""
        return dict(self.hparams.get(model) or {})


# ------------------------------------------------------------------------------ export/evaluate


class SnapshotParams(Section):
    """Scheduled runs (``mmrec snapshot``): the snapshot id and the tables' history."""

    id: str | None = None  # an ISO date first; None: today (UTC) at run time
    history: bool = True  # commit features, embeddings, recommendations, IDs to the Delta history
    keep_snapshots: int = Field(30, ge=1)  # history retention (vacuum) per table

    @field_validator("id")
    @classmethod
    def _iso_date_first(cls, v: str | None) -> str | None:
        if v is not None:
            from pipelines.snapshot import snapshot_time

            snapshot_time(v)
        return v


class ExportParams(Section):
    models: Literal["all"] | list[str] = "all"
    k: int = Field(50, gt=0)
    exclude_seen: list[Literal["train", "valid", "test"]] = ["train", "valid", "test"]
    chunk_size: int = Field(2048, gt=0)


class SignificanceParams(Section):
    metrics: list[str] = ["recall@20", "ndcg@20"]
    alpha: float = Field(0.05, gt=0, lt=1)
    bootstrap: int = Field(1000, gt=0)
    seed: int | None = None  # null: the top-level seed


class EvaluateParams(Section):
    ks: list[Annotated[int, Field(gt=0)]] = [10, 20]
    chunk_size: int = Field(2048, gt=0)
    chunk_memory_mb: float = Field(256, gt=0)
    popularity_split: list[Annotated[float, Field(gt=0, lt=1)]] = [0.2, 0.5]
    few_train_max: int | None = Field(5, ge=0)
    significance: SignificanceParams = SignificanceParams()


# -------------------------------------------------------------------------------------- report


class ReportParams(Section):
    """What the HTML report samples and draws (``reports/report.html``)."""

    seed: int | None = None  # null: the top-level seed
    gallery_queries: int = Field(8, ge=0)
    neighbours: int = Field(8, gt=0)
    map_points: int = Field(2000, ge=0)
    map_method: Literal["pca", "tsne"] = "pca"
    max_categories: int = Field(10, ge=1, le=12)
    example_users: int = Field(3, ge=0)
    history_max: int = Field(20, gt=0)
    top_k: int = Field(10, gt=0)
    thumbnail_px: int = Field(64, ge=16, le=256)
    thumbnail_quality: int = Field(75, ge=10, le=95)
    chunk_rows: int = Field(8192, gt=0)
    histogram_bins: int = Field(10, ge=2, le=50)


# ---------------------------------------------------------------------------------------- root


class Config(Section):
    """The whole of ``params.yaml``."""

    seed: int = 42
    demo: DemoParams = DemoParams()
    data: DataParams = DataParams()
    ingest: IngestParams = IngestParams()
    extract: ExtractParams = ExtractParams()
    graph: GraphParams = GraphParams()
    semantic_ids: SemanticIdsParams = SemanticIdsParams()
    validate_: ValidateParams = Field(ValidateParams(), alias="validate")
    train: TrainParams = TrainParams()
    export: ExportParams = ExportParams()
    evaluate: EvaluateParams = EvaluateParams()
    report: ReportParams = ReportParams()
    snapshot: SnapshotParams = SnapshotParams()
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, protected_namespaces=())
    _unknown: ClassVar[str] = "unknown section"

    @property
    def validate_params(self) -> ValidateParams:
        return self.validate_

    def effective_ingest(self) -> IngestParams:
        """The ingest section with the dataset's ``data.ingest`` overrides merged in."""
        merged = deep_merge(self.ingest.model_dump(), self.data.ingest)
        try:
            return IngestParams.model_validate(merged)
        except ValidationError as e:
            raise ParamsError("params.yaml data.ingest: " + "; ".join(_messages(e))) from None

    def feature_names(self) -> list[str]:
        return list(self.extract.features)

    def updated(self, patch: dict[str, Any]) -> Config:
        """A re-validated copy with ``patch`` deep-merged over params.yaml's shape (tests, tools)."""
        return Config.from_dict(deep_merge(to_raw(self), patch))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "params.yaml") -> Config:
        try:
            return cls.model_validate(raw)
        except ValidationError as e:
            raise ParamsError(f"{source}: " + "\n  ".join(_messages(e))) from None


def to_raw(config: Config) -> dict[str, Any]:
    """The config as a params.yaml-shaped mapping (model sections back under ``train``)."""
    raw = config.model_dump(by_alias=True)
    raw["train"] = {**{k: v for k, v in raw["train"].items() if k != "hparams"}, **raw["train"]["hparams"]}
    return raw


def _dotted(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for p in loc:
        s = str(p)
        # Discriminated unions add the tag (the encoder name) to the location; drop it.
        if s in ("sentence-transformers", "open_clip", "hf-llm", "precomputed") or s.startswith("function-"):
            continue
        parts.append("validate" if s == "validate_" else s)
    return ".".join(parts)


def _messages(e: ValidationError) -> list[str]:
    out = []
    for err in e.errors(include_url=False):
        ctx = err.get("ctx") or {}
        loc = tuple(err["loc"])
        if "key" in ctx:
            loc = (*loc, *str(ctx["key"]).split("."))
        key = _dotted(loc) or "(top level)"
        msg = err["msg"]
        if err["type"] not in ("unknown_key", "unknown_model", "wrong_type", "nested"):
            msg = f"{msg}, got {err.get('input')!r}"
        out.append(f"{key}: {msg}")
    return out


def load_config(path: Path | str = DEFAULT_PARAMS) -> Config:
    """Read and check ``params.yaml``; raises ``ParamsError`` naming every bad key."""
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: params file not found (run from the project root or pass --params)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping at the top level")
    return Config.from_dict(raw, str(path))


# ------------------------------------------------------------------------ params reference doc


def _type_name(annotation: Any) -> str:
    if "SentenceFeature" in str(annotation):
        return "mapping of name -> feature (sections below)"
    s = str(annotation).replace("typing.", "").replace("pipelines.config.", "").replace("__main__.", "")
    s = s.replace("<class '", "").replace("'>", "")
    return s.replace("|", "\\|")


def _constraints(info: Any) -> str:
    out = []
    for m in info.metadata:
        for attr, sym in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤")):
            v = getattr(m, attr, None)
            if v is not None:
                out.append(f"{sym} {v}")
    return ", ".join(out)


def _rows(model: type[BaseModel], prefix: str, rows: list[str]) -> None:
    for name, info in model.model_fields.items():
        if name == "hparams":
            continue
        key = f"{prefix}{info.alias or name}"
        ann = info.annotation
        sub = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        if sub is not None:
            _rows(sub, key + ".", rows)
            continue
        default = info.default
        shown = "" if default is None and info.is_required() else f"`{default!r}`"
        rows.append(f"| `{key}` | {_type_name(ann)} | {shown} | {_constraints(info)} |")


def params_reference() -> str:
    """Markdown reference of every key of params.yaml, generated from the models above."""
    lines = [
        "# params.yaml reference",
        "",
        "Generated from `pipelines/config.py` (`python -m pipelines.config > docs/params.md`); a test",
        "keeps it in step. Unknown keys anywhere are errors. `train.<model>` sections take the model's",
        "hyper-parameters (its `defaults` in `training/models/`) and any `train.common` key; a list",
        "value is a grid axis. Encoder options depend on `extract.features.<name>.encoder`.",
        "",
    ]
    sections: list[tuple[str, type[BaseModel]]] = [("", Config)]
    sections += [
        (f"extract.features.<name> (encoder: {m.model_fields['encoder'].annotation.__args__[0]})", m)
        for m in (SentenceFeature, ClipFeature, LlmFeature, PrecomputedFeature)
    ]
    for title, model in sections:
        rows: list[str] = []
        _rows(model, "" if not title else "", rows)
        lines += [
            f"## {title or 'All sections'}",
            "",
            (model.__doc__ or "").strip(),
            "",
            "| key | type | default | range |",
            "|---|---|---|---|",
            *rows,
            "",
        ]
    from training.models import model_names
    from training.models.base import model_class

    lines += ["## Model hyper-parameters (`train.<model>`)", ""]
    for name in model_names():
        hp = ", ".join(f"`{k}`={v!r}" for k, v in model_class(name).defaults.items())
        lines.append(f"- **{name}**: {hp}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(params_reference(), end="")
