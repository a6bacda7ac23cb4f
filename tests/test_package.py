"""The package surface: lazy public names, and a device-side import that
pulls in no TensorFlow."""

import subprocess
import sys

import edge_resnet


def test_every_public_name_resolves():
    for name in edge_resnet.__all__:
        assert getattr(edge_resnet, name) is not None, name


def test_importing_the_package_and_runtime_side_loads_no_tensorflow_or_keras():
    code = (
        "import sys, edge_resnet, edge_resnet.device.runtime, edge_resnet.device.tflite_inspect, edge_resnet.data.images, "
        "edge_resnet.quantize.recipe, edge_resnet.data.preprocess, edge_resnet.check.parity, edge_resnet.check.report, "
        "edge_resnet.quantize.statistics, edge_resnet.quantize.ranges, edge_resnet.quantize.int8_tflite, edge_resnet.check.layer_debug; "
        "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_no_private_tensorflow_module_is_used():
    """The TFLite converter's calibrator and quantizer are private API; the
    toolkit calibrates and quantizes without them (tests may use them as
    oracles)."""
    from pathlib import Path

    package = Path(edge_resnet.__file__).parent
    users = [path.name for path in package.rglob("*.py") if "tensorflow.lite.python" in path.read_text()]
    assert users == []


PACKAGE = __import__("pathlib").Path(edge_resnet.__file__).parent
# The data flow, lowest first. A module may import from its own layer or
# from a lower one, never from a higher one.
LAYERS = [
    {"errors", "files", "quiet", "options"},
    {"device"},
    {"data", "calibration"},
    {"model"},
    {"quantize"},
    {"check"},
    {"convert", "cli"},
]


def layer_of(part):
    return next(index for index, names in enumerate(LAYERS) if part in names)


def package_imports(path):
    """The edge_resnet folders or top-level modules a module imports, by the
    first name under edge_resnet/ (relative imports resolved)."""
    import ast

    own_parts = path.relative_to(PACKAGE).with_suffix("").parts[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = list(own_parts[:len(own_parts) - (node.level - 1)])
            target = base + (node.module.split(".") if node.module else [])
            names = [target[0]] if target else [alias.name for alias in node.names]
            yield from (name for name in names if name != "__version__")
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module]
            for module in modules:
                parts = module.split(".")
                if parts[0] == "edge_resnet" and len(parts) > 1:
                    yield parts[1]


def test_the_layout_has_the_folders_of_the_data_flow():
    folders = sorted(path.name for path in PACKAGE.iterdir() if (path / "__init__.py").exists())
    assert folders == ["check", "data", "device", "model", "quantize"]
    loose = sorted(path.stem for path in PACKAGE.glob("*.py") if path.stem != "__init__")
    assert loose == ["cli", "convert", "errors", "files", "options", "quiet"]


def test_no_module_imports_from_a_layer_above_it():
    upward = []
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE)
        if relative.name == "__init__.py" and len(relative.parts) == 1:
            continue  # the lazy public names point everywhere by design
        own = layer_of(relative.parts[0] if len(relative.parts) > 1 else relative.stem)
        upward += [f"{relative} imports {name}" for name in package_imports(path) if layer_of(name) > own]
    assert upward == []


def test_every_device_module_imports_without_tensorflow_keras_or_the_build_side():
    """device/ is what ships to a device: it must load where TensorFlow and
    Keras cannot even be imported."""
    modules = sorted(f"edge_resnet.device.{path.stem}" for path in (PACKAGE / "device").glob("*.py")
                     if path.stem != "__init__")
    code = (
        "import sys\n"
        "class Refuse:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('tensorflow', 'keras', 'tf2onnx'):\n"
        "            raise ImportError(f'{name} is blocked here')\n"
        "sys.meta_path.insert(0, Refuse())\n"
        f"import {', '.join(modules)}\n"
        "print(sorted(m for m in sys.modules if m.startswith('edge_resnet.') and m.split('.')[1] in "
        "('model', 'quantize', 'check')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    assert len(modules) == 5


def imported_package_names(path):
    """(module, name) for each `from edge_resnet... import name` in a file."""
    import ast

    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").split(".")[0] == "edge_resnet":
            yield from ((node.module, alias.name) for alias in node.names)


def test_every_name_the_benchmarks_and_tests_import_from_the_package_exists():
    """The benchmarks are not run by CI; this catches the imports a move of
    the layout leaves stale there."""
    import importlib

    root = PACKAGE.parent
    missing = []
    for path in sorted([*root.glob("benchmarks/*.py"), *root.glob("tests/*.py")]):
        for module, name in imported_package_names(path):
            imported = importlib.import_module(module)
            if not hasattr(imported, name):
                try:
                    importlib.import_module(f"{module}.{name}")
                except ModuleNotFoundError:
                    missing.append(f"{path.relative_to(root)}: from {module} import {name}")
    assert missing == []
