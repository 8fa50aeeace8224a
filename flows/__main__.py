import sys

from pxflow.flows.cli import main

sys.exit(main())
