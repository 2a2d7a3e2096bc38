"""`ray job submit --working-dir . -- python jobs/prepare_data.py --raw DIR --out OUT [...]`

The same command as `cl3dor prepare`; inside a job it joins the job's cluster ($RAY_ADDRESS).
"""

import sys

from cl3dor_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["prepare", *sys.argv[1:]]))
