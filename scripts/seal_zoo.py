"""Re-seal the bundled zoo: every entry's sidecar gets its weights hash and seal, the manifest both.

    python scripts/seal_zoo.py [ZOO_DIR]

Run after adding or retraining entries (``scripts/build_zoo.py`` calls it too).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from annt.zoo import seal_zoo

ZOO = Path(__file__).resolve().parents[1] / "src" / "annt" / "zoo"

if __name__ == "__main__":
    for entry in seal_zoo(sys.argv[1] if len(sys.argv) > 1 else ZOO):
        print(json.dumps({"name": entry["name"], "sha256": entry["sha256"],
                          "checkpoint_sha256": entry["checkpoint_sha256"]}))
