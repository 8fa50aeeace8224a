from pxflow.flows.cli import run

run()
