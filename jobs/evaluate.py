"""`ray job submit --working-dir . -- python jobs/evaluate.py --model RUN/model --data OUT --out EVAL [...]`

The same command as `cl3dor evaluate`: deploys the model with Ray Serve on the job's cluster
($RAY_ADDRESS) and evaluates through it, or evaluates a running app with --url.
"""

import sys

from cl3dor_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
