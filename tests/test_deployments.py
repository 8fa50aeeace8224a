"""deployments/prefect.yaml names installed flows (module entrypoints) with parameters they accept; the pool
templates are valid; the README's deploy steps, run literally from a fresh copy of the repository, deploy and run."""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from tests.conftest import ROOT

DEPLOYMENTS = ROOT / "deployments"


def _prefect_yaml() -> dict:
    return yaml.safe_load((DEPLOYMENTS / "prefect.yaml").read_text())


def test_every_deployment_points_at_an_installed_flow_with_valid_parameters():
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.flows import Flow, load_flow_from_entrypoint

    from pxflow.flows.options import AnnotateOptions

    config = _prefect_yaml()
    assert config["pull"] == []  # nothing to pull or cd into: the flows come from the installed package
    assert "PXFLOW_HOME" not in (DEPLOYMENTS / "prefect.yaml").read_text()
    deployments = config["deployments"]
    names = {d["name"] for d in deployments}
    assert names >= {"annotate", "annotate-nightly", "backfill", "backfill-nightly", "gpu", "lake-maintenance"}
    full_names = set()
    for deployment in deployments:
        module, _, name = deployment["entrypoint"].partition(":")
        assert re.fullmatch(r"pxflow\.flows\.\w+", module), deployment["entrypoint"]
        spec = importlib.util.find_spec(module)
        assert spec is not None and spec.origin.endswith(".py"), module
        flow = load_flow_from_entrypoint(deployment["entrypoint"])
        # the module's flow object (its body may be a Prefect-free function of another name: flows/annotate_run.py)
        assert isinstance(flow, Flow) and flow.fn is getattr(importlib.import_module(module), name).fn
        full_names.add(f"{flow.name}/{deployment['name']}")
        parameters = deployment.get("parameters", {})
        signature = inspect.signature(flow.fn)
        unknown = set(parameters) - set(signature.parameters)
        assert not unknown, f"{deployment['name']}: {unknown} are not parameters of {flow.name}"
        if deployment["name"] != "gpu":  # the shard-group child gets its parameters from its parent run
            required = {n for n, p in signature.parameters.items() if p.default is inspect.Parameter.empty}
            assert required <= set(parameters), f"{deployment['name']} misses {required - set(parameters)}"
            flow.validate_parameters(parameters)  # types check out (Prefect's own validation)
        assert deployment["work_pool"]["name"] == ("gpu" if deployment["name"] == "gpu" else "cpu")
        for schedule in deployment.get("schedules") or []:
            CronSchedule(cron=schedule["cron"], timezone=schedule.get("timezone"))
    by_name = {d["name"]: d for d in deployments}
    nightly = by_name["annotate-nightly"]
    assert nightly["schedules"][0]["timezone"] == "Europe/Berlin" and nightly["schedules"][0]["cron"] == "30 1 * * *"
    # the nightly run hands its shards to the shard-group deployment on the GPU pool
    assert nightly["parameters"]["options"]["runner"] == "deployment"
    assert nightly["parameters"]["options"]["deployment"] in full_names
    assert AnnotateOptions().deployment == "annotate-shard-group/gpu" and "annotate-shard-group/gpu" in full_names
    assert not by_name["backfill"].get("schedules")  # run by hand
    assert by_name["backfill-nightly"]["parameters"]["end"] == "yesterday"


def test_backfill_parameters_are_described():
    from pxflow.flows.backfill import backfill

    properties = backfill.parameters.properties
    assert set(properties) == {"input", "output", "start", "end", "options", "plan"}
    assert all(p.get("description") for p in properties.values()), properties


def test_process_pool_base_job_template_is_a_process_template():
    template = json.loads((DEPLOYMENTS / "process-pool-base-job-template.json").read_text())
    assert set(template) == {"job_configuration", "variables"}
    assert template["job_configuration"]["command"] == "{{ command }}"
    properties = template["variables"]["properties"]
    for value in template["job_configuration"].values():
        assert value.strip("{} ") in properties
    assert properties["env"]["default"]["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"


def _placeholders(node) -> set[str]:
    if isinstance(node, dict):
        return set().union(*(_placeholders(v) for v in node.values())) if node else set()
    if isinstance(node, list):
        return set().union(*(_placeholders(v) for v in node)) if node else set()
    return set(re.findall(r"\{\{\s*(\w+)\s*\}\}", node)) if isinstance(node, str) else set()


def test_gpu_pool_template_requests_one_gpu_per_pod():
    template = json.loads((DEPLOYMENTS / "gpu-pool-base-job-template.json").read_text())
    manifest = template["job_configuration"]["job_manifest"]
    assert manifest["kind"] == "Job"
    (container,) = manifest["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "{{ gpus }}"
    properties = template["variables"]["properties"]
    assert properties["gpus"]["default"] == 1
    assert _placeholders(template["job_configuration"]) <= set(properties)  # every placeholder is a variable
    assert {"image", "env", "cpu", "memory"} <= set(properties)


def _fresh_copy(dest) -> None:
    """A clone of the repository; while the checkout has uncommitted work, the files a clone of it would hold."""
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    if not dirty:
        subprocess.run(["git", "clone", "-q", str(ROOT), str(dest)], check=True, timeout=120)
        return
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


def _deploy_steps() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- deploy-steps -->\s*```bash\n(.*?)```", text, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def _fresh_venv(where) -> dict[str, str]:
    """A new virtualenv that sees this one's dependencies but not its pxflow; returns the env to run in.

    ``pip install .`` of the whole dependency set would take minutes, and a ``--system-site-packages``
    venv does not see this venv's packages (they are not the system's). So the new venv gets a
    ``.pth`` line naming this venv's site-packages: the dependencies import from there, while that
    folder's own ``.pth`` files (the editable pxflow's finder) are not run, so the only pxflow the new
    venv has is the one the README's ``pip install .`` puts into its own site-packages (pip sees the
    dependencies as installed and installs nothing else; it leaves this venv's pxflow alone, "outside
    environment"). ``pip`` and ``prefect`` are this venv's scripts with the new interpreter as shebang.
    """
    import site

    venv = where / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    (new_site,) = (venv / "lib").glob("python*/site-packages")
    (new_site / "deps-from-test-venv.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    bin_dir = os.path.dirname(sys.executable)
    for script in ("pip", "prefect"):
        lines = open(os.path.join(bin_dir, script)).read().splitlines(keepends=True)
        (venv / "bin" / script).write_text(f"#!{venv / 'bin' / 'python'}\n" + "".join(lines[1:]))
        (venv / "bin" / script).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    return {**env, "PATH": str(venv / "bin") + os.pathsep + os.environ.get("PATH", ""), "VIRTUAL_ENV": str(venv),
            "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


@pytest.mark.slow
def test_the_readme_deploy_steps_deploy_and_run_from_a_fresh_copy(prefect_server, tmp_path, shared_dir):
    """Every README line as written, ``pip install .`` included, from the clone's root: there the
    checkout's ``pxflow/`` comes first on ``sys.path`` (``prefect deploy`` imports from the working
    directory), so this fails unless ``pxflow.flows`` resolves from a checkout too (``pxflow/__init__.py``)."""
    from tests.conftest import COCO_MINI, PICODET_ONNX
    from tests.support.annotate_helpers import read_table

    clone = tmp_path / "clone"
    clone.mkdir()
    _fresh_copy(clone)
    src = tmp_path / "in"
    src.mkdir()
    for path in sorted((COCO_MINI / "images").iterdir())[:4]:
        (src / path.name).symlink_to(path)
    out = tmp_path / "out"
    steps = _deploy_steps()
    assert steps[0].startswith("pip install .") and steps[-1].startswith("prefect worker start")
    script = "set -euo pipefail\n" + "\n".join(steps)
    env = {**_fresh_venv(tmp_path), "PREFECT_API_URL": prefect_server, "IMAGES": str(src), "MODEL": str(PICODET_ONNX),
           "OUT": str(out)}
    proc = subprocess.run(["bash", "-c", script], cwd=clone, env=env, capture_output=True, text=True, timeout=600)
    logs = proc.stdout + proc.stderr
    assert proc.returncode == 0, logs[-4000:]
    assert "submitting flow run" in logs.lower(), logs[-3000:]

    (run,) = read_table(str(out / "runs")).to_pylist()
    assert run["complete"] and run["images_inferred"] == 4
    rows = read_table(str(out / "images")).to_pylist()
    # image identities are real paths (docs/schema.md): the symlinks' targets
    assert sorted(r["image_uri"] for r in rows) == sorted(str(p.resolve()) for p in src.iterdir())
