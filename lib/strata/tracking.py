"""MLflow at the edge: the tracking store and model registry a job talks to.

The store is connected (and its experiment made) before any training starts, so an unreachable
store is one line and nothing else has happened. Registry aliases, not stages (deprecated):
`challenger` is the newest trained version, `champion` the one predictions use.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from strata.config import MlflowConfig

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


class TrackingError(RuntimeError):
    """The tracking store or registry cannot be used."""


@dataclass
class Tracking:
    client: object          # mlflow.MlflowClient
    experiment_id: str
    tracking_uri: str

    @classmethod
    def connect(cls, config: MlflowConfig) -> "Tracking":
        import mlflow
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        for noisy in ("mlflow", "alembic"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        # MLflow's HTTP client retries for minutes by default: a store that is down should fail
        # the job in seconds (explicit settings in the environment win).
        for name, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(name, value)
        mlflow.set_tracking_uri(config.tracking_uri)
        if config.registry_uri:
            mlflow.set_registry_uri(config.registry_uri)
        client = MlflowClient()
        try:
            experiment = client.get_experiment_by_name(config.experiment)
            experiment_id = (experiment.experiment_id if experiment is not None else
                             client.create_experiment(config.experiment, artifact_location=config.artifact_location))
        except (MlflowException, OSError) as exc:
            raise TrackingError(f"cannot use the MLflow tracking store {config.tracking_uri}: "
                                f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}") from None
        except Exception as exc:  # noqa: BLE001 - e.g. requests' ConnectionError for an http store
            raise TrackingError(f"cannot reach the MLflow tracking store {config.tracking_uri}: "
                                f"{type(exc).__name__}") from None
        mlflow.set_experiment(experiment_id=experiment_id)
        return cls(client, experiment_id, config.tracking_uri)

    def version_by_alias(self, name: str, alias: str):
        """The registered model version holding alias, or None."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_model_version_by_alias(name, alias)
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise

    def set_alias(self, name: str, alias: str, version: str | int) -> None:
        self.client.set_registered_model_alias(name, alias, str(version))
