"""Checking a command's S3 locations before any work, so a wrong bucket, key or endpoint is one clear line.

Without this, a missing bucket or a wrong secret key surfaced deep inside delta-rs or a flow
run, as a multi-line ``Generic S3 error`` or a traceback, after a Prefect server had started.
One ``ListObjectsV2`` (the read every command does first anyway) tells them apart by the
server's error code, and :class:`~pxflow.flows.cli.errors.UsageError` says what to fix.
An endpoint that refuses or does not answer is a setup error too: the probe makes
:data:`PROBE_ATTEMPTS` quick attempts instead of the run's adaptive retries (about 7 s
for a refused connection, minutes for one that drops packets), so it fails in seconds.
"""

from __future__ import annotations

from pxflow.pipelines.io.storage import Storage, default_storage
from pxflow.pipelines.io.stores import UnsupportedOperationError
from pxflow.pipelines.io.uri import uri_scheme

from .errors import UsageError, one_line

#: botocore attempts of the probe, and its TCP connect timeout in seconds (the run's reads keep their retries)
PROBE_ATTEMPTS = 2
PROBE_CONNECT_TIMEOUT = 3.0

#: S3 error code -> (cause, fix); ``{bucket}`` and ``{endpoint}`` are filled in
_S3_CAUSES = {
    "NoSuchBucket": ("the bucket {bucket!r} does not exist on {endpoint}",
                     "create it, or fix the bucket name"),
    "InvalidAccessKeyId": ("the S3 server does not know the access key (InvalidAccessKeyId)",
                           "check AWS_ACCESS_KEY_ID (or the --s3-block settings)"),
    "SignatureDoesNotMatch": ("the S3 server rejected the secret key (SignatureDoesNotMatch)",
                              "check AWS_SECRET_ACCESS_KEY (or the --s3-block settings)"),
    "AccessDenied": ("these credentials may not list {bucket!r} (AccessDenied)",
                     "grant them s3:ListBucket and s3:PutObject there, or use other credentials"),
    "403": ("the S3 server refused the request (403)", "check the credentials and their permissions"),
}


#: the schemes delta-rs (its ``object_store``) writes Delta tables to
DELTA_SCHEMES = frozenset({"file", "s3", "s3a", "gs", "az", "adl", "azure", "abfs", "abfss"})


def check_table_location(uri: str, flag: str, storage: Storage | None = None) -> None:
    """Raise :class:`UsageError` naming the scheme when the Delta tables cannot be written at ``uri``.

    A store may serve inputs and not tables (``http(s)://``, a plug-in's ``memory://``): its
    ``table_location`` refuses, or names a scheme delta-rs cannot write. Checked first, so no
    model is fetched and nothing is listed before the error.
    """
    storage = storage or default_storage()
    scheme = uri_scheme(uri)
    try:
        location, _ = storage.table_location(uri)
    except UnsupportedOperationError:
        location = None
    if location is None or uri_scheme(location) not in DELTA_SCHEMES:
        raise UsageError(f"{flag} {uri}: Delta tables cannot be written to {scheme}:// (they need a local folder "
                         "or a store delta-rs writes, such as s3://)")


def check_location(uri: str, flag: str, storage: Storage | None = None) -> None:
    """Raise :class:`UsageError` (``<flag> <uri>: <cause>; <fix>``) when ``uri`` is an S3 location that the
    credentials cannot read; other schemes pass (their errors are already one line)."""
    storage = storage or default_storage()
    from pxflow.pipelines.io.stores.s3 import S3Store, s3_error_code

    store = storage.store_for(uri)
    if not isinstance(store, S3Store):
        return
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
    from botocore.exceptions import ConnectionError as EndpointUnreachable

    endpoint = store.settings.resolved_endpoint() or "AWS"
    probe = S3Store(store.settings, max_attempts=PROBE_ATTEMPTS, read_attempts=1, connect_timeout=PROBE_CONNECT_TIMEOUT)
    try:
        probe.is_dir(uri)
    except NoCredentialsError:
        raise UsageError(f"{flag} {uri}: no S3 credentials found; set AWS_ACCESS_KEY_ID and "
                         "AWS_SECRET_ACCESS_KEY (or give --s3-block)") from None
    except EndpointUnreachable:  # refused, timed out, no route, unknown host
        raise UsageError(f"{flag} {uri}: cannot reach the S3 endpoint {endpoint}; check AWS_ENDPOINT_URL "
                         "(or the --s3-block settings)") from None
    except (BotoCoreError, OSError) as exc:
        raise UsageError(f"{flag} {uri}: {one_line(exc)}") from None
    except ClientError as exc:  # the server answered with an error code
        code = s3_error_code(exc)
        cause, fix = _S3_CAUSES.get(code, (f"the S3 server answered {code}: {one_line(exc)}", "check the location"))
        bucket = store.parse(uri).bucket
        raise UsageError(f"{flag} {uri}: {cause.format(bucket=bucket, endpoint=endpoint)}; {fix}") from None
