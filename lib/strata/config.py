"""Typed configuration: conf/base.yaml, then conf/<env>.yaml, then STRATA_* environment overrides.

Datasets live in conf/datasets/<name>.yaml and models in conf/models/<name>.yaml, so onboarding a
dataset is a config change. Every error is one line naming the key and the file it came from, and
is raised before Spark starts.
"""
from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

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
class LakeConfig:
    root: str
    engine: Literal["delta-rs", "delta-spark"] = "delta-rs"
    # Maven coordinates or jar paths of the Delta connector; spark-submit.sh passes them only
    # when engine is delta-spark.
    delta_spark_packages: str | None = None
    delta_spark_jars: str | None = None
    vacuum_retention_hours: int = 168


@dataclass(frozen=True)
class RawSourceConfig:
    bucket: str
    prefix: str
    format: Literal["csv", "json", "parquet", "auto"] = "auto"
    pattern: str = "*"


@dataclass(frozen=True)
class AnalysisConfig:
    """A gold aggregate for the warehouse: metrics (Spark SQL aggregates) per group."""
    name: str
    group_by: list[str]
    metrics: dict[str, str]


@dataclass(frozen=True)
class GoldConfig:
    # feature name -> Spark SQL expression over silver columns
    features: dict[str, str]
    # Spark SQL expression; null where the row has no label
    label: str | None = None
    analysis: AnalysisConfig | None = None


@dataclass(frozen=True)
class DatasetConfig:
    name: str
    source: RawSourceConfig
    # column name -> Spark SQL type, in order
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
    gold: GoldConfig | None = None


@dataclass(frozen=True)
class ModelConfig:
    name: str
    dataset: str
    label: str
    features: list[str]
    algorithm: str
    grid: dict[str, list[Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class QualityConfig:
    # Great Expectations Data Docs (HTML) are built here; relative to the project root.
    data_docs_dir: str = ".strata/data_docs"
    # false skips silver/gold validation and row-rule quarantine (benchmarks, emergency
    # backfills); casts, de-duplication and corrupt-record quarantine still apply.
    gates: bool = True


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

    def dataset(self, name: str) -> DatasetConfig:
        if name not in self.datasets:
            raise ConfigError(f"unknown dataset '{name}'; configured: {sorted(self.datasets)}")
        return self.datasets[name]


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
    return dataclasses.replace(
        config, lake=dataclasses.replace(config.lake, root=_resolve_root(config.lake.root, conf_dir.parent)),
        quality=dataclasses.replace(config.quality, data_docs_dir=_resolve_root(
            config.quality.data_docs_dir, conf_dir.parent)))


def _resolve_root(root: str, project_root: Path) -> str:
    """URIs stay as they are; a relative local path is relative to the project root."""
    if "://" in root:
        return root.rstrip("/")
    return str((project_root / root).resolve())


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
        node[path[-1]] = yaml.safe_load(raw) if raw != "" else None
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
                          f"got {value!r} ({type(value).__name__})")

    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(inner, value, path, origins)
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


def main(argv: list[str] | None = None) -> int:
    """`python -m strata.config --env ENV KEY` prints one setting (spark-submit.sh uses it)."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(description="Print a configuration value.")
    parser.add_argument("--env", required=True)
    parser.add_argument("key", help="dotted key, e.g. spark.master")
    args = parser.parse_args(argv)
    try:
        node: Any = load_config(args.env)
        for part in args.key.split("."):
            node = node[part] if isinstance(node, dict) else getattr(node, part)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 1
    except (AttributeError, KeyError):
        print(f"config error: no key '{args.key}'", file=sys.stderr)
        return 1
    print("" if node is None else node)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
