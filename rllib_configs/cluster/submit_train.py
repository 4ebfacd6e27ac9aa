"""Entry point for `ray submit CLUSTER.yaml rllib_configs/cluster/submit_train.py`.

`ray submit` runs this file on the head node; it trains with the `cluster_gpu` preset on
the cluster the head belongs to, writing to ~/ganno-runs/cluster_gpu. Extra arguments go
to `ganno train`, e.g. `ray submit CLUSTER.yaml submit_train.py -- --stop-iters 50`. The
folder holds one run: submit again with `-- --resume` to continue it (with the settings it
recorded, `--seed` included) or `-- --overwrite` to replace it.
"""

import os
import sys

from ganno_env.cli import main

if __name__ == "__main__":
    out = os.path.expanduser("~/ganno-runs/cluster_gpu")
    args = ["train", "--preset", "cluster_gpu", "--out", out, "--address", "auto"]
    sys.exit(main(args + sys.argv[1:]))
