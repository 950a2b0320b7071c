"""The local stack: real Airflow, MLflow, Triton, Prometheus and Alertmanager on 127.0.0.1, no Docker."""
