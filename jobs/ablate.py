"""`ray job submit --working-dir . -- python jobs/ablate.py --config configs/ablation.yaml --out ABL [--quick]`

The same command as `cl3dor ablate`. The ablation starts its own embedded Ray (it sizes it to run
`parallel` variants side by side), so on a cluster submit it to a single node.
"""

import sys

from cl3dor_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["ablate", *sys.argv[1:]]))
