"""`ray job submit --working-dir . -- python jobs/train.py --config configs/tiny.yaml --data OUT --out RUN [...]`

The same command as `cl3dor train`; inside a job it joins the job's cluster ($RAY_ADDRESS).
"""

import sys

from cl3dor_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
