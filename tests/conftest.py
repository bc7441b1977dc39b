import os
import signal

import pytest
import torch

# Tests must never reach the network: HF loading is exercised through tiny models saved to temp dirs.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

# A test session started in the background of a non-interactive shell (nohup, `cmd &` in a CI script) inherits
# SIGINT ignored, and polymodal rightly leaves an ignored signal alone; the Ctrl-C tests need the terminal's
# behaviour, so restore it here (child processes inherit it: exec resets handlers, but keeps SIG_IGN).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
if signal.getsignal(signal.SIGTERM) is signal.SIG_IGN:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
