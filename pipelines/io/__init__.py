"""Storage and image I/O shared by every pipeline, task and flow.

One storage layer serves model directories, inputs, outputs and indexes, so a
path, a ``file://`` URI, an ``http(s)://`` URL and an ``s3://`` key behave alike.
"""
