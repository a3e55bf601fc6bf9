"""``import hwnas`` and ``hwnas --help`` work without the optional runtimes installed."""

import subprocess
import sys

from conftest import ROOT

BLOCK = """
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {'litert_torch', 'ai_edge_litert', 'tensorrt'}:
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None
sys.meta_path.insert(0, Block())
"""


def run_blocked(code: str):
    return subprocess.run([sys.executable, "-c", BLOCK + code], capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_import_and_help_without_optional_runtimes():
    proc = run_blocked("import hwnas, hwnas.cli, hwnas.devices.backends, hwnas.measure.profiler\n"
                       "heavy = {'onnxruntime', 'litert_torch', 'ai_edge_litert', 'tensorrt'} & set(sys.modules)\n"
                       "print('HEAVY', sorted(heavy))\n"
                       "hwnas.cli.main(['--help'])")
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout and "profile" in proc.stdout


def test_devices_names_the_missing_extra():
    proc = run_blocked("import hwnas.cli\nhwnas.cli.main(['devices', '--json'])")
    assert proc.returncode == 0, proc.stderr
    assert "pip install -e '.[tflite]'" in proc.stdout


def test_profiling_a_device_without_its_runtime_exits_2():
    proc = run_blocked("import hwnas.cli\nhwnas.cli.main(['profile', '--device', 'cpu-tflite', '-q'])")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and ".[tflite]" in proc.stderr


def test_the_cli_and_its_help_load_no_heavy_library():
    heavy = ["torch", "networkx", "onnxruntime", "matplotlib", "scipy", "onnx"]
    code = ("import sys, hwnas.cli\n"
            "for argv in (['--help'], *[[c, '--help'] for c in ('profile', 'table', 'predict', 'search', 'export', "
            "'verify', 'check', 'pipeline', 'devices')]):\n"
            "    try:\n        hwnas.cli.main(argv)\n    except SystemExit:\n        pass\n"
            f"print('LOADED', sorted({{m.split('.')[0] for m in sys.modules}} & {set(heavy)!r}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "LOADED []" in proc.stdout, proc.stdout[-500:]
