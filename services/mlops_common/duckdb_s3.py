"""DuckDB with the platform's S3 and Delta tables, offline: its extensions come from their wheels
(``duckdb-extension-*`` in requirements.in), never from DuckDB's download site."""

from __future__ import annotations

import importlib
from pathlib import Path
from urllib.parse import urlsplit

import duckdb

from mlops_common.settings import S3Settings

EXTENSIONS = ("httpfs", "aws", "delta")


def _extension_file(name: str) -> Path:
    package = importlib.import_module(f"duckdb_extension_{name}")
    files = sorted(Path(package.__file__).parent.glob(f"extensions/v*/{name}.duckdb_extension"))
    if not files:
        raise RuntimeError(f"the wheel duckdb-extension-{name} holds no extension for this DuckDB; run `make setup`")
    return files[-1]


def connect_duckdb(settings: S3Settings) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB that reads ``s3://`` paths of the platform's object store and Delta tables
    (``delta_scan('s3://bucket/prefix')``)."""
    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    for name in EXTENSIONS:
        con.load_extension(str(_extension_file(name)))
    secret = {"TYPE": "s3", "REGION": settings.aws_default_region}
    if settings.aws_access_key_id and settings.aws_secret_access_key:
        secret |= {"KEY_ID": settings.aws_access_key_id, "SECRET": settings.aws_secret_access_key.get_secret_value()}
    if settings.s3_endpoint_url:
        endpoint = urlsplit(settings.s3_endpoint_url)
        secret |= {"ENDPOINT": endpoint.netloc, "URL_STYLE": "path", "USE_SSL": endpoint.scheme == "https"}
    options = ", ".join(f"{key} {_literal(value)}" for key, value in secret.items())
    con.execute(f"CREATE SECRET platform_s3 ({options})")
    return con


def _literal(value: str | bool) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return "'" + value.replace("'", "''") + "'"
