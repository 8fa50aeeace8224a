"""One input, one identity, one row (issue 20, items 4 and 8).

Every listed entry gets exactly one ``images`` row under one identity (the real path of a local
file, the normalised URI of a remote one), whatever the spelling, the symlinks, or whether it can
be read; dotfiles follow one rule locally and on S3; an http(s) host that is down or answers 5xx
leaves retryable rows that the next run annotates. Runs use the toy classifier (no ../shared).
"""

from __future__ import annotations

import http.server
import logging
import os
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from pxflow.flows.options import AnnotateOptions
from pxflow.pipelines.io.errors import InputError
from pxflow.pipelines.io.manifest import iter_entries
from pxflow.pipelines.io.storage import Storage
from pxflow.pipelines.io.stores import HttpStore
from pxflow.pipelines.io.uri import input_identity
from tests.support.annotate_helpers import read_table
from tests.support.s3_server import free_port


def _png(value: int) -> bytes:
    return cv2.imencode(".png", np.full((12, 16, 3), value, np.uint8))[1].tobytes()


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """``(config, model_dir)`` of the toy whole-image classifier."""
    import tests.support.toy_classifier as toy_pkg
    from tests.support.toy_classifier.model import build

    return toy_pkg.CONFIG, build(str(tmp_path_factory.mktemp("toy") / "model"))


def _annotate(input: str, output: Path, toy, **options):
    from pxflow.flows.annotate import annotate

    config, model = toy
    return annotate(input=input, output=str(output), options=AnnotateOptions(pipeline=config, model_dir=model, **options))


def _rows(output: Path) -> dict[str, dict]:
    rows = read_table(str(output / "images")).to_pylist()
    by_uri = {r["image_uri"]: r for r in rows}
    assert len(by_uri) == len(rows), "two rows for one image_uri"
    return by_uri


# ---------------------------------------------------------------- local trees

def test_a_tree_of_links_and_odd_names_gives_one_row_per_file_and_per_unreadable_entry(prefect_server, tmp_path, toy):
    root = tmp_path / "in"
    imgs = root / "imgs"
    imgs.mkdir(parents=True)
    for name, value in (("a.png", 0), ("b.png", 255), ("c.png", 0)):
        (imgs / name).write_bytes(_png(value))
    (imgs / "b_again.png").symlink_to("b.png")  # one file, two names: one row
    (root / "alias").symlink_to("imgs")  # sorts first, so the folder is walked through the link
    (root / ".hidden.png").write_bytes(_png(0))  # the dotfile rule: not listed
    (root / "dangling.png").symlink_to(tmp_path / "gone.png")
    (root / "loop1.png").symlink_to("loop2.png")
    (root / "loop2.png").symlink_to("loop1.png")
    with open(os.fsencode(str(root)) + b"/caf\xe9.png", "wb") as f:  # Latin-1 name: not valid UTF-8
        f.write(_png(255))
    (root / "caf\\xe9.png").write_bytes(_png(0))  # literally the escaped spelling of that name
    link = tmp_path / "link"
    link.symlink_to(root)  # the input folder itself reached through a symlink

    out = tmp_path / "out"
    first = _annotate(str(link), out, toy, shard_size=3)
    real = os.path.realpath(root)
    assert (first["listed"], first["duplicates"], first["images_inferred"]) == (8, 1, 8)
    assert first["complete"] and first["error_types"] == {"not_found": 3}
    rows = _rows(out)
    assert sorted(rows) == sorted([
        f"{real}/imgs/a.png", f"{real}/imgs/b.png", f"{real}/imgs/c.png",
        f"{real}/dangling.png", f"{real}/loop1.png", f"{real}/loop2.png",
        f"file://{real}/caf%E9.png",  # not valid UTF-8: escaped bytes, readable, distinct from...
        f"{real}/caf\\xe9.png",  # ...the file whose name is the backslash spelling
    ])
    assert {u for u, r in rows.items() if r["status"] == "error"} == {
        f"{real}/dangling.png", f"{real}/loop1.png", f"{real}/loop2.png"}
    assert "dangling symbolic link" in rows[f"{real}/dangling.png"]["error_message"]
    assert "loop" in rows[f"{real}/loop1.png"]["error_message"]
    objects = {r["image_uri"]: r["label"] for r in read_table(str(out / "objects")).to_pylist()}
    assert objects[f"file://{real}/caf%E9.png"] == "bright" and objects[f"{real}/caf\\xe9.png"] == "dark"

    # the same folder under another spelling is the same inputs: nothing new, no second set of rows
    again = _annotate(f"{root}/./", out, toy, shard_size=3)
    assert (again["listed"], again["unchanged"], again["images_inferred"]) == (8, 8, 0)
    assert len(_rows(out)) == 8


def test_manifest_spellings_of_one_file_give_one_row(prefect_server, tmp_path, toy):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    (imgs / "a.png").write_bytes(_png(0))
    (imgs / "b.png").write_bytes(_png(255))
    manifest = imgs / "list.txt"
    manifest.write_text("\n".join([
        f"{imgs}/a.png", f"{imgs}/./a.png", f"{imgs}//a.png", f"file://{imgs}/a.png", "a.png", f"{imgs}/b.png",
    ]) + "\n")
    out = tmp_path / "out"
    result = _annotate(str(manifest), out, toy)
    assert (result["listed"], result["duplicates"], result["images_inferred"]) == (2, 4, 2) and result["complete"]
    real = os.path.realpath(imgs)
    assert sorted(_rows(out)) == [f"{real}/a.png", f"{real}/b.png"]


# ---------------------------------------------------------------- the dotfile rule, local and S3

DOT_TREE = {"a.jpg": b"a", ".hidden.jpg": b"h", "sub/b.jpg": b"b", "sub/.c.jpg": b"c", ".cache/d.jpg": b"d"}


def test_dotfiles_follow_one_rule_in_local_folders_and_s3_prefixes(s3_server, tmp_path, caplog):
    storage = Storage()  # S3 through the fixture's AWS environment
    local, remote = str(tmp_path / "tree"), s3_server.unique_prefix("dots")
    for root in (local, remote):
        for rel, data in DOT_TREE.items():
            storage.write_bytes(f"{root}/{rel}", data)

    def listed(location: str, root: str) -> list[str]:
        return [e.uri[len(root) + 1:] for e in iter_entries(location, storage)]

    for root, logger in ((local, "pxflow.pipelines.io.stores.local"), (remote, "pxflow.pipelines.io.stores.s3")):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger=logger):
            assert listed(root, root) == ["a.jpg", "sub/b.jpg"], root
        assert "skipped 3 hidden" in caplog.text, root  # said, not dropped silently
        assert listed(f"{root}/.cache/", root) == [".cache/d.jpg"], root  # a hidden location itself lists
        assert listed(f"{root}/.hidden.jpg", root) == [".hidden.jpg"], root  # named exactly: read


# ---------------------------------------------------------------- identities of remote URIs

def test_remote_identities_normalise_only_what_cannot_change_the_object():
    assert input_identity("HTTP://Example.COM:80/a/./b/../c.jpg#frag") == "http://example.com/a/c.jpg"
    assert input_identity("https://h:8443/a//b.jpg?v=1") == "https://h:8443/a//b.jpg?v=1"
    assert input_identity("S3://bucket/a//./b.jpg") == "s3://bucket/a//./b.jpg"  # S3 keys are literal
    assert input_identity("gs://bucket/x.jpg") == "gs://bucket/x.jpg"  # unknown scheme: its error row keeps it


# ---------------------------------------------------------------- http(s) outages

class _Images(http.server.BaseHTTPRequestHandler):
    """``/imgN.png`` images; ``/missing.png`` is 404, ``/forbidden.png`` 403; ``server.unavailable``: 503."""

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/missing.png":
            self.send_error(404)
        elif self.path == "/forbidden.png":
            self.send_error(403)
        elif getattr(self.server, "unavailable", False):
            self.send_error(503)
        else:
            body = _png(255)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def _serve(port: int = 0, unavailable: bool = False) -> http.server.ThreadingHTTPServer:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Images)
    server.unavailable = unavailable
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_http_store_marks_outages_and_5xx_transient_and_4xx_permanent():
    store = HttpStore(attempts=2)
    server = _serve(unavailable=True)
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        expected = {
            f"{base}/img0.png": ("download_failed", True),  # 503
            f"http://127.0.0.1:{free_port()}/img0.png": ("download_failed", True),  # connection refused
            f"{base}/forbidden.png": ("download_failed", False),
            f"{base}/missing.png": ("not_found", False),
        }
        seen = {}
        for uri in expected:
            with pytest.raises(InputError) as err:
                store.read_object(uri)
            seen[uri] = (err.value.error_type, err.value.transient)
    finally:
        server.shutdown()
        server.server_close()
    assert seen == expected


def test_http_outage_leaves_retryable_rows_and_the_rerun_annotates_them(prefect_server, tmp_path, toy, monkeypatch):
    from pxflow.flows import annotate as annotate_module
    from pxflow.flows.annotate import IncompleteRunError

    # the shard's own retries still run (and still fail); only their wait is cut
    monkeypatch.setattr(annotate_module, "annotate_shard", annotate_module.annotate_shard.with_options(retry_delay_seconds=0))
    down_port = free_port()  # nothing listens here yet: the host is down
    flaky = _serve(unavailable=True)
    up = None
    try:
        flaky_base = f"http://127.0.0.1:{flaky.server_address[1]}"
        down = [f"http://127.0.0.1:{down_port}/img{i}.png" for i in range(2)]
        busy = [f"{flaky_base}/img{i}.png" for i in range(2)]
        missing = f"{flaky_base}/missing.png"
        manifest = tmp_path / "urls.txt"
        manifest.write_text("\n".join(down + busy + [missing]) + "\n")
        out = tmp_path / "out"

        with pytest.raises(IncompleteRunError, match="4 retryable"):
            _annotate(str(manifest), out, toy)
        rows = _rows(out)
        assert len(rows) == 5
        for uri in down + busy:
            assert (rows[uri]["error_type"], rows[uri]["retryable"]) == ("download_failed", True), uri
        assert (rows[missing]["error_type"], rows[missing]["retryable"]) == ("not_found", False)

        up = _serve(down_port)  # the host is back
        flaky.unavailable = False  # and the other one answers again
        result = _annotate(str(manifest), out, toy)
        assert result["complete"] and (result["retried"], result["unchanged"], result["images_inferred"]) == (4, 1, 4)
        rows = _rows(out)
        assert len(rows) == 5 and all(rows[u]["status"] == "ok" and not rows[u]["retryable"] for u in down + busy)
    finally:
        for server in (flaky, up):
            if server is not None:
                server.shutdown()
                server.server_close()
