"""Storage and image I/O shared by every pipeline, task and flow.

One storage layer serves model directories, inputs, outputs and indexes, so a
path, a ``file://`` URI, an ``http(s)://`` URL and an ``s3://`` key behave alike:
:class:`~pipelines.io.storage.Storage` (settings passed in, never global) routes
each URI to the :class:`~pipelines.io.stores.Store` for its scheme, and
:func:`~pipelines.io.inputs.iter_inputs` / :func:`~pipelines.io.manifest.iter_entries`
are the one way inputs are expanded.
"""
