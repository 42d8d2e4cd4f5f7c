"""The kernels run as plain Python (NUMBA_DISABLE_JIT=1) and agree with the compiled path."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

from eventsim.checkpoint import load_checkpoint
from eventsim.engine import simulate_tokens

SCRIPT = """
import json, sys
import numpy as np
from eventsim.checkpoint import load_checkpoint
from eventsim.engine import simulate_tokens
from eventsim.placement import even_placement
ck = load_checkpoint(sys.argv[1])
res = simulate_tokens(ck, list(range(2, 14)), placement=even_placement(ck.manifest, 9), record_logits=True)
print(json.dumps({"logits": res.logits.tolist(), "macs": res.trace.macs.tolist(),
                  "events": res.trace.events_emitted.tolist()}))
"""


def test_python_and_compiled_paths_agree(small_egru):
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1", "PYTHONPATH": os.getcwd()}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, small_egru], capture_output=True, text=True, env=env,
                          check=True)
    plain = json.loads(proc.stdout)
    from eventsim.placement import even_placement

    ck = load_checkpoint(small_egru)
    res = simulate_tokens(ck, list(range(2, 14)), placement=even_placement(ck.manifest, 9), record_logits=True)
    np.testing.assert_allclose(res.logits, np.array(plain["logits"]), rtol=1e-12)
    np.testing.assert_array_equal(res.trace.macs, np.array(plain["macs"]))
    np.testing.assert_array_equal(res.trace.events_emitted, np.array(plain["events"]))
