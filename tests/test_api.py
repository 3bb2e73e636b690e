import subprocess
import sys

import rltuner


def test_every_public_name_resolves():
    for name in rltuner.__all__:
        assert getattr(rltuner, name) is not None, name


def test_import_is_light():
    # `import rltuner` and `rltuner --help` must not pay for torch or music21.
    code = "import sys, rltuner; print('torch' in sys.modules, 'music21' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
