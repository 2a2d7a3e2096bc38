"""`ray job submit --working-dir . -- python jobs/ablate.py --config configs/ablation.yaml --out ABL
[--quick] [overrides]`

The same command as `cl3dor ablate`. Inside `ray job submit` it joins the job's cluster
($RAY_ADDRESS): `parallel` variants run side by side, each training with train.workers Ray Train
workers (e.g. 'more_overrides=[train.workers=8,train.use_gpu=true]') and evaluating through its own
Serve deployment. ABL must be on storage every node sees.
"""

import sys

from cl3dor_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["ablate", *sys.argv[1:]]))
