"""deployments/prefect.yaml names real flows with parameters they accept; the work-pool template is valid."""

from __future__ import annotations

import inspect
import json

import pytest
import yaml

from tests.conftest import ROOT

DEPLOYMENTS = ROOT / "deployments"


def _prefect_yaml() -> dict:
    return yaml.safe_load((DEPLOYMENTS / "prefect.yaml").read_text())


def test_every_deployment_points_at_a_real_flow_with_valid_parameters():
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.flows import load_flow_from_entrypoint

    config = _prefect_yaml()
    deployments = config["deployments"]
    assert {d["name"] for d in deployments} >= {"annotate", "backfill-nightly"}
    for deployment in deployments:
        path, _, name = deployment["entrypoint"].partition(":")
        assert (ROOT / path).is_file(), deployment["entrypoint"]
        flow = load_flow_from_entrypoint(str(ROOT / deployment["entrypoint"]))
        assert flow.fn.__name__ == name
        signature = inspect.signature(flow.fn)
        unknown = set(deployment.get("parameters", {})) - set(signature.parameters)
        assert not unknown, f"{deployment['name']}: {unknown} are not parameters of {flow.name}"
        required = {n for n, p in signature.parameters.items() if p.default is inspect.Parameter.empty}
        assert required <= set(deployment["parameters"]), f"{deployment['name']} misses {required - set(deployment['parameters'])}"
        flow.validate_parameters(deployment["parameters"])  # types check out (Prefect's own validation)
        assert deployment["work_pool"]["name"] == "pxflow-process"
        for schedule in deployment.get("schedules") or []:
            CronSchedule(cron=schedule["cron"], timezone=schedule.get("timezone"))
    nightly = next(d for d in deployments if d["name"] == "backfill-nightly")
    assert nightly["schedules"] and nightly["parameters"]["end"] == "yesterday"


def test_process_pool_base_job_template_is_a_process_template():
    template = json.loads((DEPLOYMENTS / "process-pool-base-job-template.json").read_text())
    assert set(template) == {"job_configuration", "variables"}
    assert template["job_configuration"]["command"] == "{{ command }}"
    properties = template["variables"]["properties"]
    # every placeholder in the job configuration has a variable that defines it
    for value in template["job_configuration"].values():
        assert value.strip("{} ") in properties
    assert properties["env"]["default"]["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"


@pytest.mark.slow
def test_a_real_process_worker_runs_the_annotate_deployment(prefect_server, tmp_path, shared_dir):
    """Work pool from our template, `prefect deploy` from our prefect.yaml, one run picked up by a process worker."""
    import os
    import subprocess
    import sys

    from tests.support.annotate_helpers import read_table
    from tests.conftest import COCO_MINI, PICODET_ONNX

    src = tmp_path / "in"
    src.mkdir()
    for path in sorted((COCO_MINI / "images").iterdir())[:4]:
        (src / path.name).symlink_to(path)
    out = tmp_path / "out"
    # CI runs the venv's python without activating the venv: put its bin/ first so the worker finds it too
    bin_dir = os.path.dirname(sys.executable)
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "PXFLOW_HOME": str(ROOT),
           "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}

    def prefect(*args: str) -> str:
        proc = subprocess.run([os.path.join(bin_dir, "prefect"), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"prefect {' '.join(args)}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        return proc.stdout + proc.stderr

    prefect("work-pool", "create", "pxflow-process", "--type", "process", "--overwrite",
            "--base-job-template", str(DEPLOYMENTS / "process-pool-base-job-template.json"))
    prefect("--no-prompt", "deploy", "--prefect-file", str(DEPLOYMENTS / "prefect.yaml"), "--name", "annotate")
    params = {"input": str(src), "output": str(out),
              "options": {"model_dir": str(PICODET_ONNX), "threshold": 0.3, "shard_size": 2}}
    prefect("deployment", "run", "annotate/annotate", "--params", json.dumps(params))
    logs = prefect("worker", "start", "--pool", "pxflow-process", "--run-once")
    assert "submitting flow run" in logs, logs[-3000:]

    (run,) = read_table(str(out / "runs")).to_pylist()
    assert run["complete"] and run["images_inferred"] == 4 and run["shards_planned"] == 2
    assert read_table(str(out / "images")).num_rows == 4
