"""S3 helpers: one way to build clients, create buckets and publish objects atomically."""

import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import pyarrow.fs as pafs
from botocore.config import Config
from botocore.exceptions import ClientError

from mlops_common.settings import S3Settings

STAGING_PREFIX = "_staging"


def s3_client(settings: S3Settings, *, timeout_s: float = 30.0) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        aws_access_key_id=settings.aws_access_key_id,
        aws_secret_access_key=(
            settings.aws_secret_access_key.get_secret_value() if settings.aws_secret_access_key else None
        ),
        region_name=settings.aws_default_region,
        config=Config(
            connect_timeout=timeout_s,
            read_timeout=timeout_s,
            retries={"max_attempts": 3, "mode": "standard"},
            s3={"addressing_style": "path"},
        ),
    )


def storage_options(settings: S3Settings) -> dict[str, Any]:
    """fsspec/s3fs options for ``pandas.read_*("s3://…", storage_options=…)``."""
    options: dict[str, Any] = {"client_kwargs": {"region_name": settings.aws_default_region}}
    if settings.s3_endpoint_url:
        options["client_kwargs"]["endpoint_url"] = settings.s3_endpoint_url
    if settings.aws_access_key_id and settings.aws_secret_access_key:
        options["key"] = settings.aws_access_key_id
        options["secret"] = settings.aws_secret_access_key.get_secret_value()
    return options


def arrow_filesystem(settings: S3Settings) -> pafs.S3FileSystem:
    """The same S3 for pyarrow's readers and writers (Parquet, CSV), which stream from it in chunks."""
    endpoint = urlsplit(settings.s3_endpoint_url) if settings.s3_endpoint_url else None
    return pafs.S3FileSystem(
        access_key=settings.aws_access_key_id,
        secret_key=settings.aws_secret_access_key.get_secret_value() if settings.aws_secret_access_key else None,
        region=settings.aws_default_region,
        endpoint_override=endpoint.netloc if endpoint else None,
        scheme=endpoint.scheme if endpoint else "https",
    )


def ensure_bucket(client: Any, bucket: str) -> None:
    try:
        client.head_bucket(Bucket=bucket)
    except ClientError:
        client.create_bucket(Bucket=bucket)


def object_exists(client: Any, bucket: str, key: str) -> bool:
    try:
        client.head_object(Bucket=bucket, Key=key)
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise
    return True


def publish_atomically(client: Any, bucket: str, key: str, body: bytes) -> None:
    """Upload to a staging key, then copy onto ``key`` in one server-side step.

    Readers of ``key`` see either the previous complete object or the new complete one, never a
    partial upload, and a failure before the copy leaves ``key`` untouched.
    """
    staging_key = f"{STAGING_PREFIX}/{uuid.uuid4().hex}/{key}"
    client.put_object(Bucket=bucket, Key=staging_key, Body=body)
    try:
        client.copy_object(Bucket=bucket, Key=key, CopySource={"Bucket": bucket, "Key": staging_key})
    finally:
        client.delete_object(Bucket=bucket, Key=staging_key)


def publish_file_atomically(client: Any, bucket: str, key: str, path: Path) -> None:
    """A local file of any size onto ``key``, visible whole or not at all without a staging copy: S3 shows
    a single PUT once its whole body has arrived and a multipart upload (boto3's above 8 MiB) only at its
    completion; boto3 aborts the upload on an error, and a killed process leaves an incomplete upload
    that no reader sees (a bucket lifecycle rule deletes those)."""
    client.upload_file(str(path), bucket, key)
