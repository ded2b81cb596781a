"""Typed configuration: conf/base.yaml, then conf/<env>.yaml, then STRATA_* environment overrides.

Datasets live in conf/datasets/<name>.yaml and models in conf/models/<name>.yaml, so onboarding a
dataset is a config change. Every error is one line naming the key and the file it came from, and
is raised before Spark starts.

Loading checks types first (_build), then meaning (_check_meaning): names are plain and every
table name is unique in the lake, schema types are Spark SQL types, source.rename renames declared
columns to new unique names, source.timezone is an IANA zone, keys and partition columns exist
(under their new names), the gold analysis's partitions can be replaced by each run, the anomalies
section has a partition column as its date and k or a k range, and every SQL
expression of a dataset parses (sqlglot, Spark dialect: no JVM) and names only columns it can see. An error never shows a value
that came from the environment or sits under a key that looks like a credential.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import yaml

from strata import catalog
from strata.catalog import NAME, NAME_RULE

ENVIRONMENTS = ("local", "dev", "prod")
ENV_PREFIX = "STRATA_"
# STRATA_<SECTION>__<KEY>[__<KEY>...] overrides one key; STRATA_ENV / STRATA_CONF_DIR are not keys.
ENV_SEPARATOR = "__"


class ConfigError(ValueError):
    """A configuration problem, with the key and the file that set it."""


@dataclass(frozen=True)
class SparkConfig:
    master: str
    app_name: str
    shuffle_partitions: int
    driver_memory: str
    log_level: str = "WARN"
    conf: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class S3Config:
    # None: the standard AWS endpoint. Credentials always come from the standard AWS chain.
    endpoint_url: str | None = None
    region: str = "us-east-1"
    # Start an embedded S3 endpoint (moto) on 127.0.0.1 for this run: the local default.
    embedded: bool = False
    connect_timeout_seconds: int = 5
    # boto3's attempts per S3 call (it retries throttling, 5xx and connection errors itself)
    max_attempts: int = 3
    # Reads of one raw object, each from its first byte: a failure while streaming the body is
    # not retried by boto3. Waits retry_backoff_seconds x 2^n between them.
    object_read_attempts: int = 3
    retry_backoff_seconds: float = 0.5


@dataclass(frozen=True)
class MaintenanceConfig:
    """What the maintain job does to every table (see README, "Lake upkeep")."""
    # Compaction rewrites a partition's small files into files of about this size.
    target_file_size_mb: int = 128
    # Files that commits removed are deleted once removed this long (time travel and readers of
    # older versions need them until then).
    vacuum_retention_hours: int = 168
    # Files that no commit ever referenced (a crashed writer's) are deleted once this old...
    orphan_grace_hours: int = 24
    # ...and only if no in-flight marker covers them; a marker older than this is a dead run's.
    # Must be longer than the longest run.
    inflight_ttl_hours: int = 48


@dataclass(frozen=True)
class LakeConfig:
    root: str
    engine: Literal["delta-rs", "delta-spark"] = "delta-rs"
    # Maven coordinates or jar paths of the Delta connector; spark-submit.sh passes them only
    # when engine is delta-spark.
    delta_spark_packages: str | None = None
    delta_spark_jars: str | None = None
    maintenance: MaintenanceConfig = field(default_factory=MaintenanceConfig)


@dataclass(frozen=True)
class RawSourceConfig:
    """Where a dataset's raw objects are: s3://bucket/prefix, or a local folder (path)."""
    bucket: str | None = None
    prefix: str = ""
    # A local folder or file:// URI (relative: to the project root) read instead of
    # s3://bucket/prefix, through the same executor path; an env file may set it to switch a
    # dataset to local files. On a cluster, every executor must see the folder at this path.
    path: str | None = None
    format: Literal["csv", "json", "parquet", "auto"] = "auto"
    pattern: str = "*"
    # full: list every key under prefix each run. dated: keys are <prefix>/YYYY/MM/DD/...; a run
    # lists only from the newest folder already ingested less lookback_days (S3 StartAfter), so
    # an object that lands, or is re-delivered, in an older folder than that is not seen (run
    # once with listing: full to pick such objects up). Keys that sort before the dated folders
    # are not listed either.
    listing: Literal["full", "dated"] = "full"
    lookback_days: int = 3
    # source column (a `schema` key, as the header has it) -> the name silver and gold use
    rename: dict[str, str] = field(default_factory=dict)
    # IANA zone of timestamps that carry no offset; silver converts them to UTC
    timezone: str = "UTC"

    @property
    def is_local(self) -> bool:
        return self.path is not None

    @property
    def container(self) -> str:
        """The bucket, or the folder holding a local source's folder: keys are relative to it."""
        return str(Path(self.path).parent) if self.path is not None else self.bucket

    @property
    def key_prefix(self) -> str:
        """The keys' common prefix: the S3 prefix, or a local source's folder name."""
        return Path(self.path).name if self.path is not None else self.prefix.strip("/")

    @property
    def uri(self) -> str:
        return self.object_uri(self.key_prefix) + "/"

    def object_uri(self, key: str) -> str:
        return f"file://{self.container}/{key}" if self.path is not None else f"s3://{self.bucket}/{key}"


@dataclass(frozen=True)
class AnalysisConfig:
    """A gold aggregate for the warehouse: metrics (Spark SQL aggregates) per group."""
    name: str
    group_by: list[str]
    metrics: dict[str, str]
    # The table's partition columns: dataset partition columns it groups by. None: those of the
    # dataset's partition columns that group_by holds (group_by must then hold all of them).
    partition_by: list[str] | None = None


@dataclass(frozen=True)
class GoldConfig:
    # feature name -> Spark SQL expression over silver columns
    features: dict[str, str]
    # Spark SQL expression; null where the row has no label
    label: str | None = None
    analysis: AnalysisConfig | None = None


@dataclass(frozen=True)
class ContentKeyConfig:
    """A silver column holding a sha2-256 of the record's source values, for sources without an id."""
    name: str
    # "all" (every schema column, in schema order) or schema columns (by their silver names); the
    # hash follows this order
    columns: list[str] | Literal["all"] = "all"


@dataclass(frozen=True)
class ThresholdConfig:
    """When a ride is an outlier: its outlier score against its cluster's threshold, learnt from
    the scores of the fit window's rows of that cluster."""
    # mad: median + c * MAD (median absolute deviation, unscaled); quantile: that quantile
    rule: Literal["mad", "quantile"] = "mad"
    c: float = 8.0
    quantile: float = 0.999
    # A cluster holding less than this share of the fit rows is anomalous as a whole (K-means
    # gives a group of rare rides a centroid of its own); 0: never.
    min_cluster_share: float = 0.01


@dataclass(frozen=True)
class AnomaliesConfig:
    """The anomalies job: K-means on standardised features of silver, per-cluster thresholds."""
    # feature name -> Spark SQL expression over silver columns (as a double)
    features: dict[str, str]
    # signed log, sign(x) * ln(1 + |x|), of each feature before standardising
    log_scale: bool = True
    # the number of clusters, or [low, high]: the k of highest silhouette among them
    k: int | None = None
    k_range: list[int] | None = None
    # days of silver (by date_column) the model is fitted on, ending at the run date
    window_days: int = 28
    threshold: ThresholdConfig = field(default_factory=ThresholdConfig)
    seed: int = 42
    # fewer usable rows in the window: the job fits nothing and reports skipped
    min_rows: int = 1000
    # K-means iterations at most (per k tried)
    max_iter: int = 20
    # with more usable rows in the window, k is chosen on a seeded sample of about this many
    # (then fitted on all of them)
    search_rows: int = 200_000
    # the event date: one of the dataset's partition columns (default: its only one)
    date_column: str | None = None


@dataclass(frozen=True)
class DatasetConfig:
    name: str
    source: RawSourceConfig
    # source column (as its header names it) -> Spark SQL type, in order; silver renames (source.rename)
    schema: dict[str, str]
    keys: list[str]
    partition_by: list[str] = field(default_factory=list)
    timestamp_format: str = "yyyy-MM-dd HH:mm:ss"
    schema_evolution: bool = False
    # Unreadable objects tolerated per ingest run (each is recorded); beyond this the run fails.
    max_bad_objects: int = 10
    # Columns that order versions of a key in silver: a row never replaces a newer one.
    version_by: list[str] = field(default_factory=lambda: ["_ingested_at", "_source_version"])
    # True: a run date with no new raw object is blocked (exit 2) instead of a clean no-op.
    require_new_data: bool = False
    # Silver: derived columns, Spark SQL over the typed columns, in order (may define partition_by).
    derive: dict[str, str] = field(default_factory=dict)
    # A content-hash column (may then be named in keys), for sources without an id.
    content_key: ContentKeyConfig | None = None
    gold: GoldConfig | None = None
    anomalies: AnomaliesConfig | None = None


@dataclass(frozen=True)
class SplitConfig:
    """Fractions of each class's labelled rows per split, in this order; they sum to 1."""
    train: float = 0.7
    validation: float = 0.15
    test: float = 0.15
    # A column whose rows stay in one split (e.g. a customer id); None: rows are independent.
    group: str | None = None


@dataclass(frozen=True)
class PromotionConfig:
    # The challenger may be worse than the champion on the primary metric by at most this much
    # (the paired bootstrap interval's upper end of champion - challenger must stay below it).
    tolerance: float = 0.01
    # The lower end of the model's interval must clear the zero-rule baseline by this much.
    baseline_margin: float = 0.02


@dataclass(frozen=True)
class MonitoringConfig:
    """The monitor job's retrain trigger (README, "Monitoring"). Drift is measured against the
    champion's training profile (BASELINE); the day-to-day drift (CONSECUTIVE) is recorded only."""
    # A feature has drifted when its population stability index against the training rows is at
    # least this (0.1: a small shift, 0.25: a large one, by the usual rule of thumb).
    feature_psi: float = 0.2
    # Retrain when at least this share of the model's features has drifted.
    drifted_share: float = 0.3
    # Retrain when the predicted probability's population stability index is at least this.
    prediction_psi: float = 0.25
    # Retrain when the champion's realised primary metric on at least this many labelled rows of
    # the run date is below the lower end of its logged test interval.
    min_labelled_rows: int = 500
    # Values of a categorical column the training profile keeps (the most frequent; the rest are
    # counted together as one value), and the frequent values the daily profile lists per column.
    max_categories: int = 100
    frequent_values: int = 10


@dataclass(frozen=True)
class ModelConfig:
    """A binary classifier trained on a dataset's gold features table (conf/models/<name>.yaml)."""
    name: str
    dataset: str
    algorithm: Literal["logistic_regression", "random_forest", "gbt"]
    # gold feature columns: numeric ones are imputed (median of the training rows), categorical
    # ones indexed and one-hot encoded (a category unseen in training gets its own slot)
    numeric_features: list[str] = field(default_factory=list)
    categorical_features: list[str] = field(default_factory=list)
    # MLlib parameter of the classifier -> values searched by cross-validation
    grid: dict[str, list[Any]] = field(default_factory=dict)
    split: SplitConfig = field(default_factory=SplitConfig)
    seed: int = 42
    folds: int = 3
    # param maps fitted in parallel per fold
    parallelism: int = 2
    # balanced: each class weighs n / (2 n_class) in training (weightCol); none: every row 1
    class_weights: Literal["balanced", "none"] = "balanced"
    # the decision threshold maximises F-beta on the validation split
    beta: float = 1.0
    primary_metric: Literal["roc_auc", "pr_auc"] = "pr_auc"
    bootstrap_replicates: int = 200
    # the simple baseline model: logistic regression on these features (numeric ones)
    baseline_features: list[str] = field(default_factory=list)
    promotion: PromotionConfig = field(default_factory=PromotionConfig)
    # predict also scores a challenger that is not the champion, as role 'shadow'
    shadow: bool = True
    # The pipeline trains the model again once the newest version trained with this config is
    # this many run days old (new data alone does not retrain it; a changed config does).
    retrain_after_days: int = 7
    monitoring: MonitoringConfig = field(default_factory=MonitoringConfig)


@dataclass(frozen=True)
class QualityConfig:
    # Great Expectations Data Docs (HTML) are built here; relative to the project root.
    data_docs_dir: str = ".strata/data_docs"
    # false skips silver/gold validation and row-rule quarantine (benchmarks, emergency
    # backfills); casts, de-duplication and corrupt-record quarantine still apply.
    gates: bool = True
    # The maintain job deletes Data Docs validation pages (and their stored results) older than this.
    data_docs_max_age_days: int = 90


@dataclass(frozen=True)
class MlflowConfig:
    # A relative sqlite path (sqlite:///<path>) and a relative artifact location are under the
    # project root (gitignored); other envs name a tracking server (http(s)://...).
    tracking_uri: str = "sqlite:///.strata/mlflow.db"
    # None: the tracking store holds the registry too
    registry_uri: str | None = None
    # where a new experiment keeps its artifacts (models, plots, datasheets)
    artifact_location: str = ".strata/mlartifacts"
    experiment: str = "strata"


@dataclass(frozen=True)
class ReportsConfig:
    # The pipeline writes one HTML run report per run here, <run_date>_<run_id>.html (a local
    # folder on the driver; relative to the project root). None: beside the Data Docs, i.e.
    # <quality.data_docs_dir>/../reports (.strata/reports by default).
    dir: str | None = None


@dataclass(frozen=True)
class PipelineConfig:
    # After a dataset's stages, train and predict each model of conf/models/ on it (strata.jobs.pipeline).
    models: bool = True


@dataclass(frozen=True)
class EstimateConfig:
    """train --estimate (README, "Training cost estimate")."""
    # What one executor core costs per hour (any currency): the estimate's cost is the cluster's
    # cores held for the predicted wall time at this price.
    price_per_core_hour: float = 0.05
    # Shares of the labelled rows the estimate trains on, smallest first; a scaling model fitted
    # on their core-seconds predicts the full table.
    fractions: list[float] = field(default_factory=lambda: [0.01, 0.02, 0.05, 0.1])


@dataclass(frozen=True)
class Config:
    env: str
    project_root: str
    spark: SparkConfig
    lake: LakeConfig
    s3: S3Config = field(default_factory=S3Config)
    quality: QualityConfig = field(default_factory=QualityConfig)
    datasets: dict[str, DatasetConfig] = field(default_factory=dict)
    models: dict[str, ModelConfig] = field(default_factory=dict)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    reports: ReportsConfig = field(default_factory=ReportsConfig)
    estimate: EstimateConfig = field(default_factory=EstimateConfig)

    def dataset(self, name: str) -> DatasetConfig:
        if name not in self.datasets:
            raise ConfigError(f"unknown dataset '{name}'; configured: {sorted(self.datasets)}")
        return self.datasets[name]

    def model(self, name: str) -> ModelConfig:
        if name not in self.models:
            raise ConfigError(f"unknown model '{name}'; configured: {sorted(self.models)}")
        return self.models[name]

    def models_of(self, dataset: str) -> list[ModelConfig]:
        """The models trained on the dataset's gold features, by name."""
        return [self.models[name] for name in sorted(self.models) if self.models[name].dataset == dataset]


def default_conf_dir() -> Path:
    """conf/ of the checkout, or STRATA_CONF_DIR (spark-submit.sh sets it)."""
    if os.environ.get("STRATA_CONF_DIR"):
        return Path(os.environ["STRATA_CONF_DIR"]).resolve()
    return Path(__file__).resolve().parents[2] / "conf"


def load_config(env: str, conf_dir: str | Path | None = None,
                environ: typing.Mapping[str, str] | None = None) -> Config:
    conf_dir = Path(conf_dir) if conf_dir else default_conf_dir()
    environ = os.environ if environ is None else environ
    if env not in ENVIRONMENTS:
        raise ConfigError(f"unknown environment '{env}': expected one of {list(ENVIRONMENTS)}")

    origins: dict[tuple[str, ...], str] = {}
    merged: dict[str, Any] = {}
    base = conf_dir / "base.yaml"
    _merge(merged, _read_yaml(base), (), str(base), origins)
    for section in ("datasets", "models"):
        for path in sorted((conf_dir / section).glob("*.yaml")):
            content = _read_yaml(path)
            content.setdefault("name", path.stem)
            _merge(merged, {section: {path.stem: content}}, (), str(path), origins)
    env_file = conf_dir / f"{env}.yaml"
    if not env_file.exists():
        raise ConfigError(f"environment '{env}' has no file {env_file}")
    _merge(merged, _read_yaml(env_file), (), str(env_file), origins)
    _apply_env_overrides(merged, environ, origins)

    merged["env"] = env
    merged["project_root"] = str(conf_dir.parent)
    config = _build(Config, merged, (), origins)
    config = _check_meaning(config, origins)
    datasets = {name: dataclasses.replace(d, source=dataclasses.replace(
                    d.source, path=_resolve_folder(d.source.path, conf_dir.parent)))
                for name, d in config.datasets.items() if d.source.path is not None}
    if config.reports.dir is not None and "://" in config.reports.dir:
        raise ConfigError(f"reports.dir ({origins.get(('reports', 'dir'), 'config')}): must be a local folder, "
                          "not a URI (the driver writes the run reports)")
    docs = _resolve_root(config.quality.data_docs_dir, conf_dir.parent)
    reports = (str(Path(docs).parent / "reports") if config.reports.dir is None
               else _resolve_root(config.reports.dir, conf_dir.parent))
    return dataclasses.replace(
        config, lake=dataclasses.replace(config.lake, root=_resolve_root(config.lake.root, conf_dir.parent)),
        quality=dataclasses.replace(config.quality, data_docs_dir=docs),
        datasets={**config.datasets, **datasets},
        mlflow=_resolve_mlflow(config.mlflow, conf_dir.parent),
        reports=dataclasses.replace(config.reports, dir=reports))


def _resolve_mlflow(mlflow: MlflowConfig, project_root: Path) -> MlflowConfig:
    """Relative local stores are under the project root (whatever the working directory)."""
    def store(uri: str | None) -> str | None:
        if uri and uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
            return f"sqlite:///{(project_root / uri[len('sqlite:///'):]).resolve()}"
        return uri
    artifacts = mlflow.artifact_location
    if "://" not in artifacts:
        artifacts = (project_root / artifacts).resolve().as_uri()
    return dataclasses.replace(mlflow, tracking_uri=store(mlflow.tracking_uri),
                               registry_uri=store(mlflow.registry_uri), artifact_location=artifacts)


def _resolve_root(root: str, project_root: Path) -> str:
    """URIs stay as they are; a relative local path is relative to the project root."""
    if "://" in root:
        return root.rstrip("/")
    return str((project_root / root).resolve())


def _resolve_folder(path: str, project_root: Path) -> str:
    """A local source's folder as an absolute path: file:// is dropped, relative is to the project."""
    if path.startswith("file://"):
        path = path[len("file://"):]
    elif "://" in path:
        raise ConfigError(f"source.path must be a local folder or file:// URI, got {path!r} "
                          "(an S3 source is bucket and prefix)")
    # Not resolve(): a symbolic link keeps its own name, which names the keys (a re-pointed link
    # must not re-key every file).
    folder = os.path.normpath(os.path.join(project_root, path))
    if not path.strip() or folder == os.path.normpath(project_root) or folder == "/":
        raise ConfigError(f"source.path must name the dataset's own folder, got {path!r}")
    return folder


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        content = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(content, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return content


def _merge(target: dict, source: dict, prefix: tuple[str, ...], origin: str,
           origins: dict[tuple[str, ...], str]) -> None:
    for key, value in source.items():
        path = prefix + (str(key),)
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value, path, origin, origins)
        else:
            target[key] = value
            origins[path] = origin
            if isinstance(value, dict):
                _record_origins(value, path, origin, origins)


def _record_origins(value: dict, prefix: tuple[str, ...], origin: str,
                    origins: dict[tuple[str, ...], str]) -> None:
    for key, sub in value.items():
        origins[prefix + (str(key),)] = origin
        if isinstance(sub, dict):
            _record_origins(sub, prefix + (str(key),), origin, origins)


def _apply_env_overrides(merged: dict, environ: typing.Mapping[str, str],
                         origins: dict[tuple[str, ...], str]) -> None:
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or ENV_SEPARATOR not in name:
            continue
        path = tuple(part.lower() for part in name[len(ENV_PREFIX):].split(ENV_SEPARATOR))
        node = merged
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"environment variable {name}: '{'.'.join(path)}' is not a section")
        try:
            node[path[-1]] = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            # The parser's message quotes the value, which may hold credentials.
            raise ConfigError(f"environment variable {name}: not a valid YAML value "
                              f"(value not shown; quote it to pass a string)") from None
        origins[path] = f"environment variable {name}"


def _where(path: tuple[str, ...], origins: dict[tuple[str, ...], str]) -> str:
    for cut in range(len(path), 0, -1):
        if path[:cut] in origins:
            return origins[path[:cut]]
    return "config"


def _build(cls: type, data: Any, path: tuple[str, ...], origins: dict) -> Any:
    key = ".".join(path) or "<top level>"
    if not isinstance(data, dict):
        raise ConfigError(f"{_where(path, origins)}: key '{key}' must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        bad = path + (unknown[0],)
        raise ConfigError(f"{_where(bad, origins)}: unknown key '{'.'.join(bad)}' "
                          f"(allowed under '{key}': {sorted(fields)})")
    values = {}
    for name, f in fields.items():
        sub = path + (name,)
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{_where(path, origins)}: missing required key '{'.'.join(sub)}'")
            continue
        values[name] = _coerce(hints[name], data[name], sub, origins)
    return cls(**values)


def _coerce(tp: Any, value: Any, path: tuple[str, ...], origins: dict) -> Any:
    key = ".".join(path)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    def fail(expected: str) -> typing.NoReturn:
        raise ConfigError(f"{_where(path, origins)}: key '{key}' must be {expected}, "
                          f"got {_shown(value, path, origins)}")

    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        arms = [a for a in args if a is not type(None)]
        if len(arms) == 1:
            return _coerce(arms[0], value, path, origins)
        for arm in arms:
            try:
                return _coerce(arm, value, path, origins)
            except ConfigError:
                continue
        fail(" or ".join(_expected(arm) for arm in arms))
    if origin is Literal:
        if value not in args:
            fail(f"one of {list(args)}")
        return value
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path, origins)
    if origin is list:
        if not isinstance(value, list):
            fail("a list")
        return [_coerce(args[0], item, path + (str(i),), origins) for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            fail("a mapping")
        return {str(k): _coerce(args[1], v, path + (str(k),), origins) for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            fail("true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail("an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail("a number")
        return float(value)
    if tp is str:
        # YAML reads `1g` as a string but `4` as an int; keys typed str accept scalars.
        if isinstance(value, (dict, list)) or value is None:
            fail("a string")
        return str(value).lower() if isinstance(value, bool) else str(value)
    raise ConfigError(f"{key}: unsupported config type {tp}")  # a bug in this module, not in config


def _expected(tp: Any) -> str:
    """How an error names what a type accepts."""
    if typing.get_origin(tp) is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    return {list: "a list", dict: "a mapping", str: "a string", int: "an integer", float: "a number",
            bool: "true or false"}.get(typing.get_origin(tp) or tp, str(tp))


# --- what values an error may show -------------------------------------------------------------

# A key whose name holds one of these carries a credential: its value is never shown.
SECRET_KEY_WORDS = ("secret", "password", "passwd", "token", "key_id", "access_key", "access.key",
                    "credential", "private")
_URL_CREDENTIALS = re.compile(r"://[^/@\s]+@")


def _shown(value: Any, path: tuple[str, ...], origins: dict, with_type: bool = True) -> str:
    """A config value as an error shows it: its repr (and type) when it comes from a file, else
    only its type (from the environment, under a credential-looking key, or a URL with
    user:password@)."""
    kind = type(value).__name__
    name = path[-1].lower() if path else ""
    if (_where(path, origins).startswith("environment variable")
            or any(word in name for word in SECRET_KEY_WORDS) or _has_credentials(value)):
        return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind} (value not shown)"
    return f"{value!r} ({kind})" if with_type else repr(value)


def _has_credentials(value: Any) -> bool:
    if isinstance(value, str):
        return bool(_URL_CREDENTIALS.search(value))
    if isinstance(value, dict):
        return any(_has_credentials(k) or _has_credentials(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(_has_credentials(v) for v in value)
    return False


# --- meaning: checked after the types, still before Spark --------------------------------------

# Dataset and analysis names become table names (strata.catalog checks them too).
# Column names: Spark resolves them ignoring case; a leading _ is kept for lineage columns.
COLUMN = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")
COLUMN_RULE = "letters, digits and _, starting with a letter; names starting with _ are lineage"
# What silver casts to (transforms/silver.py: try_cast, try_to_timestamp for timestamp and date).
SPARK_TYPES = ("string", "int", "integer", "bigint", "long", "smallint", "short", "tinyint", "byte",
               "double", "float", "real", "boolean", "date", "timestamp", "timestamp_ntz", "binary",
               "decimal")
_DECIMAL = re.compile(r"decimal\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\)\Z")
# Lineage columns silver keeps on every row (transforms/silver.py LINEAGE), visible to derive,
# and the two silver adds after deriving, visible to gold.
SOURCE_LINEAGE = ("_source_key", "_source_etag", "_source_row", "_source_version", "_ingested_at")
REFINED_LINEAGE = ("_refined_on", "_refined_run_id")
# Spark SQL functions that pyspark.sql.functions has no wrapper for (cast functions, SQL forms).
_SQL_ONLY_FUNCTIONS = frozenset(SPARK_TYPES) | {"if", "iff", "std", "mod", "decode", "java_method",
                                               "reflect", "stack", "any", "some", "every", "bool_or",
                                               "bool_and", "char", "position", "ifnull", "nvl", "nvl2"}


def _check_meaning(config: Config, origins: dict) -> Config:
    """The checks the types cannot make. Returns the config with schema types normalised."""
    datasets = {key: _check_dataset(key, dataset, origins) for key, dataset in config.datasets.items()}
    _check_tables_unique(datasets, origins)
    for key, model in config.models.items():
        _check_model(key, model, datasets, origins)
    _check_estimate(config.estimate, origins)
    return dataclasses.replace(config, datasets=datasets)


def _check_estimate(estimate: EstimateConfig, origins: dict) -> None:
    def fail(part: str, message: str) -> typing.NoReturn:
        raise ConfigError(f"{_where(('estimate', part), origins)}: key 'estimate.{part}' {message}")

    def shown(part: str, value: Any) -> str:
        return _shown(value, ("estimate", part), origins, with_type=False)

    if not estimate.price_per_core_hour >= 0:
        fail("price_per_core_hour", f"must be at least 0, got {shown('price_per_core_hour', estimate.price_per_core_hour)}")
    fractions = estimate.fractions
    if len(fractions) < 2:
        fail("fractions", f"must hold at least two shares (a scaling model needs two sizes), "
                          f"got {shown('fractions', fractions)}")
    if not all(0 < f < 1 for f in fractions) or any(b <= a for a, b in zip(fractions, fractions[1:])):
        fail("fractions", f"must be increasing shares between 0 and 1 (exclusive), got {shown('fractions', fractions)}")


def _check_model(key: str, model: ModelConfig, datasets: dict[str, DatasetConfig], origins: dict) -> None:
    base = ("models", key)

    def fail(sub: tuple[str, ...], message: str) -> typing.NoReturn:
        path = base + sub
        raise ConfigError(f"{_where(path, origins)}: key '{'.'.join(path)}' {message}")

    if not NAME.match(model.name) or model.name != key:
        fail(("name",), f"must be a plain name ({NAME_RULE}) equal to the file's name {key!r}")
    for owner in datasets.values():
        if owner.anomalies is not None and model.name == f"{owner.name}_anomalies":
            fail(("name",), f"is the registered model of dataset {owner.name!r}'s anomaly flags (anomalies job)")
    dataset = datasets.get(model.dataset)
    if dataset is None:
        fail(("dataset",), f"names unknown dataset {model.dataset!r}; configured: {sorted(datasets)}")
    if dataset.gold is None or not dataset.gold.label:
        fail(("dataset",), f"dataset {model.dataset!r} has no gold label to learn")
    columns = {c.lower(): c for c in dataset.gold.features}
    for part in ("numeric_features", "categorical_features", "baseline_features"):
        for column in getattr(model, part):
            if column.lower() not in columns:
                fail((part,), f"names {column!r}, not a feature of gold/{dataset.name}_features"
                              f"{_did_you_mean(column, columns)}")
    features = model.numeric_features + model.categorical_features
    if not features:
        fail(("numeric_features",), "and categorical_features name no feature")
    if len({c.lower() for c in features}) != len(features):
        fail(("categorical_features",), "repeats a feature (a feature is numeric or categorical, once)")
    gold_columns = {c.lower() for c in [*dataset.keys, *dataset.partition_by, *dataset.gold.features]}
    if model.split.group is not None and model.split.group.lower() not in gold_columns:
        fail(("split", "group"), f"names {model.split.group!r}, not a column of gold/{dataset.name}_features")
    unknown = [c for c in model.baseline_features if c not in model.numeric_features]
    if unknown:
        fail(("baseline_features",), f"must be numeric features of the model, got {unknown}")
    for param, values in model.grid.items():
        if param in ("featuresCol", "labelCol", "weightCol", "predictionCol", "probabilityCol", "rawPredictionCol"):
            fail(("grid", param), "is set by the training job, not searched")
        if not isinstance(values, list) or not values:
            fail(("grid", param), "must be a non-empty list of values")
        if not all(isinstance(v, (int, float, str, bool)) and v is not None for v in values):
            fail(("grid", param), f"values must be numbers, strings or booleans, got {values!r}")
    fractions = (model.split.train, model.split.validation, model.split.test)
    if any(f <= 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
        fail(("split",), f"fractions must be positive and sum to 1, got {fractions}")
    for part, value, least in (("folds", model.folds, 2), ("parallelism", model.parallelism, 1),
                               ("retrain_after_days", model.retrain_after_days, 1),
                               ("bootstrap_replicates", model.bootstrap_replicates, 20)):
        if value < least:
            fail((part,), f"must be at least {least}, got {value}")
    if model.beta <= 0:
        fail(("beta",), f"must be positive, got {model.beta}")
    watch = model.monitoring
    for part, value in (("feature_psi", watch.feature_psi), ("prediction_psi", watch.prediction_psi)):
        if value <= 0:
            fail(("monitoring", part), f"must be positive, got {value}")
    if not 0 < watch.drifted_share <= 1:
        fail(("monitoring", "drifted_share"), f"must be in (0, 1], got {watch.drifted_share}")
    for part, value in (("min_labelled_rows", watch.min_labelled_rows), ("max_categories", watch.max_categories),
                        ("frequent_values", watch.frequent_values)):
        if value < 1:
            fail(("monitoring", part), f"must be at least 1, got {value}")


def check_model_grid(config: Config, name: str) -> None:
    """The grid names parameters of the model's classifier. Not part of load_config: it imports
    pyspark.ml (about a second), which only the jobs that train pay for (preflight, before Spark)."""
    model = config.model(name)
    params = _estimator_params(model.algorithm)
    for param in model.grid:
        if param not in params:
            path = ("models", name, "grid", param)
            raise ConfigError(f"conf/models/{name}.yaml: key '{'.'.join(path)}' is not a parameter of "
                              f"{model.algorithm}{_did_you_mean(param, {p.lower(): p for p in params})}")


@functools.lru_cache(maxsize=None)
def _estimator_params(algorithm: str) -> tuple[str, ...]:
    """The classifier's parameter names, from its constructor's signature (no JVM)."""
    import inspect

    from pyspark.ml import classification

    estimator = {"logistic_regression": classification.LogisticRegression,
                 "random_forest": classification.RandomForestClassifier,
                 "gbt": classification.GBTClassifier}[algorithm]
    return tuple(p for p in inspect.signature(estimator.__init__).parameters if p != "self")


def _check_dataset(key: str, dataset: DatasetConfig, origins: dict) -> DatasetConfig:
    base = ("datasets", key)

    def fail(sub: tuple[str, ...], message: str) -> typing.NoReturn:
        path = base + sub
        raise ConfigError(f"{_where(path, origins)}: key '{'.'.join(path)}' {message}")

    def show(sub: tuple[str, ...], value: Any) -> str:
        return _shown(value, base + sub, origins, with_type=False)

    if not NAME.match(dataset.name):
        fail(("name",), f"must be a plain name ({NAME_RULE}), got {show(('name',), dataset.name)}")
    if dataset.name != key:
        fail(("name",), f"is {show(('name',), dataset.name)} but the file is {key}.yaml: they must match")

    if dataset.source.path is None and not dataset.source.bucket:
        fail(("source",), "needs bucket (and prefix) for S3, or path for a local folder")
    if dataset.source.path is None and not dataset.source.prefix.strip("/"):
        fail(("source", "prefix"), "must name the folder of the dataset's objects in the bucket")
    if dataset.source.lookback_days < 0:
        fail(("source", "lookback_days"), f"must be 0 or more, got {dataset.source.lookback_days}")

    # bronze's columns: the schema as the source has it; lower case -> name as written
    source: dict[str, str] = {}
    if not dataset.schema:
        fail(("schema",), "must name at least one column")
    schema = {}
    for column, spark_type in dataset.schema.items():
        _check_column_name(column, source, lambda message: fail(("schema",), message))
        normal = _spark_type(spark_type)
        if normal is None:
            fail(("schema", column), f"is not a Spark SQL type: {show(('schema', column), spark_type)}; "
                                     f"expected one of {', '.join(SPARK_TYPES)}, decimal(p,s)")
        schema[column] = normal
    rename = _check_rename(dataset, source, fail)
    _check_timezone(dataset.source.timezone, lambda message: fail(("source", "timezone"), message))

    # silver's columns: the schema under its new names, the content key, then the derived ones
    columns = {rename.get(c, c).lower(): rename.get(c, c) for c in schema}
    content_key = dataset.content_key
    if content_key is not None:
        content_key = _check_content_key(content_key, columns, rename, fail)
    visible = {c.lower(): c for c in SOURCE_LINEAGE} | dict(columns)

    def hint(name: str) -> str:
        return _renamed_hint(name, rename)

    for column, expression in dataset.derive.items():
        _check_column_name(column, columns, lambda message: fail(("derive",), message))
        _check_sql(expression, visible, lambda message, c=column: fail(("derive", c), message), hint)
        visible[column.lower()] = column  # later derived columns see this one

    if not dataset.keys:
        fail(("keys",), "must name at least one column")
    for sub, names in (("keys", dataset.keys), ("partition_by", dataset.partition_by)):
        for name in names:
            if name.lower() not in columns:
                fail((sub,), f"names unknown column {name!r}: not in 'schema' or 'derive'"
                             f"{hint(name) or _did_you_mean(name, columns)}")
    for name in dataset.version_by:
        if name.lower() not in visible:
            fail(("version_by",), f"names unknown column {name!r}: not in 'schema', 'derive' or the lineage "
                                  f"columns {list(SOURCE_LINEAGE)}"
                                  f"{hint(name) or _did_you_mean(name, visible)}")
    gold = dataset.gold
    if gold is not None:
        silver = visible | {c.lower(): c for c in REFINED_LINEAGE}
        # the features table's columns: keys, partition columns, features, label
        outputs = {c.lower(): c for c in [*dataset.keys, *dataset.partition_by]}
        if gold.label is not None:
            outputs["label"] = "label"
        for column, expression in gold.features.items():
            _check_column_name(column, outputs, lambda message: fail(("gold", "features"), message))
            _check_sql(expression, silver, lambda message, c=column: fail(("gold", "features", c), message), hint)
        if gold.label is not None:
            _check_sql(gold.label, silver, lambda message: fail(("gold", "label"), message), hint)
        analysis = gold.analysis
        if analysis is not None:
            sub = ("gold", "analysis")
            if not NAME.match(analysis.name):
                fail(sub + ("name",), f"must be a plain name ({NAME_RULE}), "
                                      f"got {show(sub + ('name',), analysis.name)}")
            for name in analysis.group_by:
                if name.lower() not in silver:
                    fail(sub + ("group_by",), f"names unknown column {name!r}{hint(name) or _did_you_mean(name, silver)}")
            if analysis.partition_by is None:
                # gold replaces the analysis table's partitions of the dates it refines: by default
                # the table is partitioned by the partition columns in group_by (strata.catalog.analysis),
                # and without them a second run cannot replace what the first one wrote.
                missing = [c for c in dataset.partition_by if c not in analysis.group_by]
                if missing:
                    fail(sub + ("group_by",),
                         f"must hold the dataset's partition column{'s' if len(missing) > 1 else ''} "
                         f"{', '.join(repr(c) for c in missing)}: the analysis table is partitioned by the "
                         f"partition columns in group_by, and each gold run replaces the partitions it "
                         f"refines (or state gold.analysis.partition_by)")
            else:
                analysis = _check_analysis_partitions(analysis, dataset.partition_by,
                                                      lambda message: fail(sub + ("partition_by",), message))
                gold = dataclasses.replace(gold, analysis=analysis)
            outputs = {c.lower(): c for c in analysis.group_by}
            for column, expression in analysis.metrics.items():
                _check_column_name(column, outputs, lambda message: fail(sub + ("metrics",), message))
                _check_sql(expression, silver, lambda message, c=column: fail(sub + ("metrics", c), message), hint)
    anomalies = dataset.anomalies
    if anomalies is not None:
        anomalies = _check_anomalies(dataset, anomalies, visible | {c.lower(): c for c in REFINED_LINEAGE}, hint,
                                     lambda sub, message: fail(("anomalies",) + sub, message))
    return dataclasses.replace(dataset, schema=schema, source=dataclasses.replace(dataset.source, rename=rename),
                               content_key=content_key, gold=gold, anomalies=anomalies)


# The columns the anomalies job adds to each flagged row (strata.jobs.anomalies): no feature may
# take their names.
FLAGGED_COLUMNS = ("cluster", "outlier_score", "threshold", "is_outlier", "k", "model_version", "mlflow_run_id",
                   "run_id", "flagged_at")


def _check_anomalies(dataset: DatasetConfig, anomalies: AnomaliesConfig, silver: dict[str, str],
                     hint: Callable[[str], str],
                     fail: Callable[[tuple[str, ...], str], typing.NoReturn]) -> AnomaliesConfig:
    """The date column is a partition column (the job reads a window of its partitions and
    replaces the run date's); features are new plain names over silver columns; k or k_range;
    ranges. Returned with the date column resolved and spelt as the dataset spells it."""
    partitions = {c.lower(): c for c in dataset.partition_by}
    date_column = anomalies.date_column
    if date_column is None:
        if len(dataset.partition_by) != 1:
            fail(("date_column",), f"must name the event date among the dataset's partition columns "
                                   f"{list(dataset.partition_by)}: the job reads a trailing window of its partitions")
        date_column = dataset.partition_by[0]
    elif date_column.lower() not in partitions:
        fail(("date_column",), f"names {date_column!r}, not one of the dataset's partition columns "
                               f"{list(dataset.partition_by)}: the job reads a trailing window of its partitions")
    else:
        date_column = partitions[date_column.lower()]
    if not anomalies.features:
        fail(("features",), "must name at least one feature")
    # "prediction": the column K-means adds to the features (the registered model's output)
    outputs = {c.lower(): c for c in [*dataset.keys, date_column, *FLAGGED_COLUMNS, "prediction"]}
    for column, expression in anomalies.features.items():
        _check_column_name(column, outputs, lambda message: fail(("features",), message))
        _check_sql(expression, silver, lambda message, c=column: fail(("features", c), message), hint)
    if anomalies.k is not None and anomalies.k_range is not None:
        fail(("k",), "and k_range are both set: a fixed k, or a range to choose from by silhouette")
    if anomalies.k is None and anomalies.k_range is None:
        fail(("k",), "or k_range must be set: a fixed number of clusters, or [low, high] to choose from by silhouette")
    if anomalies.k is not None and anomalies.k < 2:
        fail(("k",), f"must be at least 2 (K-means needs two clusters), got {anomalies.k}")
    k_range = anomalies.k_range
    if k_range is not None and not (len(k_range) == 2 and 2 <= k_range[0] <= k_range[1]):
        fail(("k_range",), f"must be [low, high] with 2 <= low <= high, got {k_range}")
    largest = anomalies.k if anomalies.k is not None else k_range[1]
    for part, value, least in (("window_days", anomalies.window_days, 1), ("max_iter", anomalies.max_iter, 1),
                               ("min_rows", anomalies.min_rows, largest), ("search_rows", anomalies.search_rows, 1000)):
        if value < least:
            fail((part,), f"must be at least {least}{' (the largest k)' if part == 'min_rows' else ''}, got {value}")
    threshold = anomalies.threshold
    if threshold.c <= 0:
        fail(("threshold", "c"), f"must be positive, got {threshold.c}")
    if not 0 < threshold.quantile < 1:
        fail(("threshold", "quantile"), f"must be between 0 and 1 (exclusive), got {threshold.quantile}")
    if not 0 <= threshold.min_cluster_share < 1:
        fail(("threshold", "min_cluster_share"), f"must be at least 0 and below 1, got {threshold.min_cluster_share}")
    return dataclasses.replace(anomalies, date_column=date_column)


def _check_rename(dataset: DatasetConfig, source: dict[str, str],
                  fail: Callable[[tuple[str, ...], str], typing.NoReturn]) -> dict[str, str]:
    """source.rename: declared source column -> a new plain name no other silver column has.
    Returns it keyed by the schema's spelling of each source column."""
    rename: dict[str, str] = {}
    for column, target in dataset.source.rename.items():
        sub = ("source", "rename", column)
        declared = source.get(column.lower())
        if declared is None:
            fail(sub, f"renames unknown column {column!r}: not in 'schema'{_did_you_mean(column, source)}")
        if declared in rename:
            fail(sub, f"renames {declared!r} a second time (Spark ignores case in names)")
        if not COLUMN.match(target):
            fail(sub, f"renames {column!r} to {target!r}, which is not a plain name ({COLUMN_RULE})")
        rename[declared] = target
    # the columns that keep their name first, so a collision is reported on the rename
    names = {c.lower(): c for c in source.values() if c not in rename}
    for column, target in rename.items():
        if target.lower() in names:
            clash = names[target.lower()]
            fail(("source", "rename", column),
                 f"renames {column!r} to {target!r}, already a column ({clash!r}; Spark ignores case in names)")
        names[target.lower()] = target
    return rename


def _renamed_hint(name: str, rename: dict[str, str]) -> str:
    """For a name that source.rename renames: what it is called after silver casts."""
    for column, target in rename.items():
        if column.lower() == name.lower() and target.lower() != name.lower():
            return f" (source.rename renames {column!r} to {target!r})"
    return ""


@functools.lru_cache(maxsize=None)
def _zones() -> frozenset[str]:
    import zoneinfo

    # the system's zoneinfo files also hold 'localtime' (this machine's zone, not a name) and 'Factory'
    return frozenset(zoneinfo.available_timezones()) - {"localtime", "Factory"}


def _check_timezone(name: str, fail: Callable[[str], typing.NoReturn]) -> None:
    """An IANA zone name zoneinfo knows (Spark's JVM carries the same database), not a file of the
    zoneinfo folder that is no zone name."""
    import zoneinfo

    known = _zones()
    try:
        found = name in known if known else name != "localtime" and zoneinfo.ZoneInfo(name) is not None
    except (ValueError, zoneinfo.ZoneInfoNotFoundError):
        found = False
    if not found:
        close = difflib.get_close_matches(name, sorted(known), n=1)
        fail(f"is not an IANA time zone name: {name!r} "
             + (f"(did you mean {close[0]!r}?)" if close else "(e.g. 'America/New_York', 'UTC')"))


def _check_content_key(key: ContentKeyConfig, columns: dict[str, str], rename: dict[str, str],
                       fail: Callable[[tuple[str, ...], str], typing.NoReturn]) -> ContentKeyConfig:
    """The hash's columns are schema columns (by their silver names), each once; "all" becomes
    the schema's columns in order. The key's name becomes a silver column (added to `columns`)."""
    sub = ("content_key", "columns")
    if key.columns == "all":
        names = list(columns.values())
    else:
        if not key.columns:
            fail(sub, "must name at least one column, or be 'all'")
        names, seen = [], set()
        for name in key.columns:
            if name.lower() not in columns:
                fail(sub, f"names unknown column {name!r}: not a 'schema' column"
                          f"{_renamed_hint(name, rename) or _did_you_mean(name, columns)}")
            if name.lower() in seen:
                fail(sub, f"names {name!r} twice")
            seen.add(name.lower())
            names.append(columns[name.lower()])
    _check_column_name(key.name, columns, lambda message: fail(("content_key", "name"), message))
    return dataclasses.replace(key, columns=names)


def _check_analysis_partitions(analysis: AnalysisConfig, partition_by: list[str],
                               fail: Callable[[str], typing.NoReturn]) -> AnalysisConfig:
    """gold rebuilds the silver partitions that changed and replaces the analysis partitions they
    fall in: so each analysis partition column is a column the table groups by (it has the column)
    and one of the dataset's partition columns (a changed silver partition names its value).
    Returned with the dataset's spelling of each."""
    group_by = {c.lower() for c in analysis.group_by}
    dataset = {c.lower(): c for c in partition_by}
    names: list[str] = []
    for name in analysis.partition_by or []:
        if name.lower() not in group_by:
            fail(f"names {name!r}, which is not in group_by {analysis.group_by}: the analysis table is "
                 f"partitioned by columns it groups by")
        if name.lower() not in dataset:
            fail(f"names {name!r}, which is not one of the dataset's partition columns {partition_by}: gold "
                 f"replaces the analysis partitions of the silver partitions it rebuilds")
        if dataset[name.lower()] in names:
            fail(f"names {name!r} twice")
        names.append(dataset[name.lower()])
    if partition_by and not names:
        fail(f"must name at least one of the dataset's partition columns {partition_by}: gold replaces "
             f"partitions of the analysis table, it never rewrites all of it")
    return dataclasses.replace(analysis, partition_by=names)


def _check_column_name(column: str, seen: dict[str, str], fail: Callable[[str], typing.NoReturn]) -> None:
    """A new column of a table: a plain name, not already one of `seen` (Spark ignores case)."""
    if not COLUMN.match(column):
        fail(f"column {column!r} must be a plain name ({COLUMN_RULE})")
    if column.lower() in seen:
        fail(f"column {column!r} is already a column ({seen[column.lower()]!r}; Spark ignores case in names)")
    seen[column.lower()] = column


def _spark_type(spark_type: str) -> str | None:
    """The type in canonical form (lower case, no spaces), None if silver cannot cast to it."""
    normal = re.sub(r"\s+", "", spark_type.lower())
    if normal in SPARK_TYPES:
        return normal
    match = _DECIMAL.match(normal)
    if match:
        precision, scale = int(match.group(1)), int(match.group(2) or 0)
        if 1 <= precision <= 38 and scale <= precision:
            return normal
    return None


def _did_you_mean(name: str, known: dict[str, str]) -> str:
    close = difflib.get_close_matches(name.lower(), list(known), n=1)
    return f" (did you mean {known[close[0]]!r}?)" if close else ""


def _check_sql(text: str, columns: dict[str, str], fail: Callable[[str], typing.NoReturn],
               hint: Callable[[str], str] = lambda name: "") -> None:
    """One Spark SQL expression that names only `columns` (lower case -> name) and known
    functions. Parsed with sqlglot's Spark dialect: no JVM."""
    import logging

    import sqlglot
    from sqlglot import exp
    from sqlglot.errors import ParseError, TokenError

    # sqlglot logs a warning when it falls back to an opaque command; that is refused below.
    logging.getLogger("sqlglot").setLevel(logging.ERROR)
    try:
        trees = [tree for tree in sqlglot.parse(text, read="spark") if tree is not None]
    except ParseError as exc:
        fail(f"is not valid Spark SQL: {_parse_error(exc)}")
    except TokenError:
        fail("is not valid Spark SQL: it cannot be tokenized (an unclosed quote?)")
    if len(trees) != 1:
        fail(f"must be one SQL expression, got {'none' if not trees else f'{len(trees)} statements'}")
    (tree,) = trees
    if isinstance(tree, exp.Alias):
        fail("must not alias its result: the key names the column")
    allowed_top = (exp.Condition, exp.Filter, exp.IgnoreNulls, exp.RespectNulls, exp.Interval)
    if not isinstance(tree, allowed_top) or isinstance(tree, exp.Star) or any(
            isinstance(node, (exp.Query, exp.Table, exp.Command, exp.DDL, exp.DML)) for node in tree.walk()):
        fail("must be an expression over columns, not a query or a statement")
    if any(isinstance(node, (exp.Placeholder, exp.Parameter)) for node in tree.walk()):
        fail("is not valid Spark SQL: it has a parameter placeholder")
    lambda_names = {param.name.lower() for node in tree.find_all(exp.Lambda) for param in node.expressions}
    for column in tree.find_all(exp.Column):
        parts = [part.name for part in column.parts]
        root = parts[0]
        if root.lower() in columns or (len(parts) == 1 and root.lower() in lambda_names):
            continue
        fail(f"names unknown column {'.'.join(parts)!r}{hint(root) or _did_you_mean(root, columns)}")
    for function in tree.find_all(exp.Anonymous):
        name = str(function.name)
        if name.lower() not in _spark_functions():
            suggestion = difflib.get_close_matches(name.lower(), sorted(_spark_functions()), n=1)
            fail(f"calls unknown function {name!r}"
                 + (f" (did you mean {suggestion[0]!r}?)" if suggestion else ""))


def _parse_error(exc: Exception) -> str:
    errors = getattr(exc, "errors", None) or []
    if not errors:
        return " ".join(str(exc).split())
    first = errors[0]
    # "... missing for <class 'sqlglot.expressions.temporal.TsOrDsToDate'>" -> "... for TsOrDsToDate"
    description = re.sub(r"<class '(?:[\w.]+\.)?(\w+)'>", r"\1", str(first.get("description") or "syntax error"))
    return f"{description} (line {first.get('line')}, column {first.get('col')})"


@functools.lru_cache(maxsize=None)
def _spark_functions() -> frozenset[str]:
    """Names of Spark SQL functions sqlglot does not model: pyspark.sql.functions wraps nearly all
    of them (importing it starts no JVM), plus the SQL-only ones."""
    from pyspark.sql import functions

    return frozenset(name.lower() for name in dir(functions) if not name.startswith("_")) | _SQL_ONLY_FUNCTIONS


def _check_tables_unique(datasets: dict[str, DatasetConfig], origins: dict) -> None:
    """Each (layer, name) of the lake belongs to one table: the datasets' own tables first (in
    name order), then the analysis tables."""
    owners: dict[tuple[str, str], str] = {}

    def claim(layer: str, name: str, owner: str, path: tuple[str, ...]) -> None:
        if (layer, name) in owners:
            raise ConfigError(f"{_where(path, origins)}: key '{'.'.join(path)}' names table {layer}/{name}, "
                              f"already {owners[(layer, name)]}")
        owners[(layer, name)] = owner

    tables = {key: catalog.dataset_tables(datasets[key]) for key in sorted(datasets)}
    for analysis_tables in (False, True):
        for key, roles in tables.items():
            path = ("datasets", key, "gold", "analysis", "name") if analysis_tables else ("datasets", key, "name")
            for role, table in roles.items():
                if role.startswith("analysis") == analysis_tables:
                    claim(table.layer, table.name, f"the {role.replace('_', ' ')} table of dataset "
                                                   f"{datasets[key].name!r}", path)


def main(argv: list[str] | None = None) -> int:
    """`python -m strata.config --env ENV KEY [KEY...]` prints settings, one per line, an unset one
    as an empty line (spark-submit.sh reads the ones it needs in one go)."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(description="Print configuration values, one per line.")
    parser.add_argument("--env", required=True)
    parser.add_argument("keys", nargs="+", metavar="key", help="dotted key, e.g. spark.master")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.env)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 1
    values = []
    for key in args.keys:
        node: Any = config
        try:
            for part in key.split("."):
                node = node[part] if isinstance(node, dict) else getattr(node, part)
        except (AttributeError, KeyError):
            print(f"config error: no key '{key}'", file=sys.stderr)
            return 1
        values.append("" if node is None else str(node))
    print("\n".join(values))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
