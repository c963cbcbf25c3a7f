"""The package's shape: one-way imports. Walks every import statement in effnet/ (lazy ones inside functions
included) with ``ast``; nothing here is a hard-coded list of modules."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

PACKAGE_DIR = Path(importlib.util.find_spec("effnet").origin).parent


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """effnet modules that ``name`` imports anywhere in its source."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.lstrip(".") and \
                ((node.value in modules and "." in node.value) or (is_package and node.value.startswith("."))):
            # a module named in a string is imported lazily (importlib.import_module): the CLI's COMMANDS table,
            # the facades' _EXPORTS ("effnet.models.nets.config", or ".config" relative to the package)
            rel = node.value
            if rel.startswith("."):
                level = len(rel) - len(rel.lstrip("."))
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                rel = ".".join(anchor[: len(anchor) - (level - 1)] + [rel.lstrip(".")])
            targets = [rel] if rel in modules else []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            # `from pkg import sub` imports the submodule; `from pkg import obj` imports pkg
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules and "." in target:
                target = target.rsplit(".", 1)[0]  # `import effnet.x.y` where y is a name, not a module
            if target in modules and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path [a, b, ..., a], or None (iterative DFS with colours)."""
    colour = {n: 0 for n in graph}  # 0 new, 1 on the stack, 2 done
    for root in sorted(graph):
        if colour[root]:
            continue
        stack = [(root, iter(sorted(graph[root])))]
        path = [root]
        colour[root] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                colour[node] = 2
                stack.pop()
                path.pop()
            elif colour.get(child) == 1:
                return path[path.index(child):] + [child]
            elif colour.get(child) == 0:
                colour[child] = 1
                stack.append((child, iter(sorted(graph.get(child, ())))))
                path.append(child)
    return None


def is_cli_layer(name: str) -> bool:
    return name == "effnet.cli" or name.endswith(".commands")


def package_of(name: str) -> str:
    """effnet.train.loop -> effnet.train; root modules (effnet.errors) stand for themselves; models/ is three
    packages by job (effnet.models.nets, .zoo, .paper: the networks, the zoo above them, the paper's tables and
    measurements above both), each a package of its own."""
    parts = name.split(".")
    return ".".join(parts[:3] if parts[:2] == ["effnet", "models"] and len(parts) > 3 else parts[:2])


def test_graph_is_built_from_the_source():
    graph = import_graph()
    # the walker must see lazy imports and resolve relative ones, or the tests below prove nothing
    assert "effnet.models.nets.efficientnet" in graph["effnet.models.zoo.registry"]
    assert "effnet.train.loop" in graph["effnet.train"]
    assert any(is_cli_layer(t) for t in graph["effnet.cli"])
    assert len(graph) > 30


def test_find_cycle_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_between_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_packages_depend_one_way():
    graph: dict[str, set[str]] = {}
    for name, targets in import_graph().items():
        if is_cli_layer(name) or name == "effnet":  # the CLI and the top-level facade sit above everything
            continue
        pkg = package_of(name)
        graph.setdefault(pkg, set()).update(package_of(t) for t in targets if package_of(t) != pkg)
    cycle = find_cycle(graph)
    assert cycle is None, "packages import each other: " + " -> ".join(cycle)


def test_library_never_imports_the_command_line():
    offenders = [f"{name} imports {t}" for name, targets in import_graph().items() if not is_cli_layer(name)
                 for t in targets if is_cli_layer(t)]
    assert not offenders, offenders


@pytest.mark.parametrize("pkg", sorted({package_of(n) for n in all_modules() if n.count(".") >= 2}))
def test_each_package_owns_its_commands(pkg):
    """Every capability package that has commands exposes them through add_commands, and cli.py uses it."""
    commands = PACKAGE_DIR.joinpath(*pkg.split(".")[1:]) / "commands.py"
    if not commands.exists():
        pytest.skip(f"{pkg} has no commands")
    assert "def add_commands(" in commands.read_text()
    assert f"{pkg}.commands" in import_graph()["effnet.cli"]


def test_files_saved_before_the_reorganisation_still_load():
    """tests/data holds a small model written by effnet 0.1 (commit e29440f, before the package split) with the
    logits it gave; today's code must rebuild it from the file alone and give the same logits."""
    import torch
    from safetensors.torch import load_file

    import effnet

    data = Path(__file__).parent / "data"
    model = effnet.load(data / "tiny_saved_by_v0.1.safetensors").eval()
    expected = load_file(data / "tiny_saved_by_v0.1.expected.safetensors")
    assert model.config.class_names == ("a", "b", "c") and model.config.tf_padding
    with torch.no_grad():
        assert torch.allclose(model(expected["input"]), expected["logits"], atol=1e-5)


# ---------------------------------------------------------------------------------------------- the task as the axis

RESOLVER = "effnet.models.zoo.registry"  # the one module that decides whether a thing is a classifier or a detector
DISPATCH = "effnet.tasks"  # the table from its answer to each task's package: it may call task_of, nothing else
# functions whose answer *is* that decision
QUESTIONS = {"is_detector_name", "_is_detector_name", "read_detector_config", "task_of", "stored_config"}
DETECTOR_TYPES = {"EfficientDet", "DetectorConfig", "EfficientNet", "ModelConfig"}
KIND_WORDS = ("efficientdet", "detect", "classify", "classifier", "detector")


def _asks(node: ast.AST) -> str | None:
    """Why ``node`` asks "is this a detector?" (or None): it calls one of the resolver's questions, checks the
    type of a model or config, compares with a kind's name, or tests a name's prefix."""
    if isinstance(node, (ast.Name, ast.Attribute)) and isinstance(node.ctx, ast.Load):
        name = node.id if isinstance(node, ast.Name) else node.attr
        if name in QUESTIONS:
            return f"uses {name}"
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("isinstance", "issubclass"):
        types = node.args[1] if len(node.args) > 1 else None
        names = {n.id if isinstance(n, ast.Name) else getattr(n, "attr", "") for n in ast.walk(types)} if types else set()
        if names & DETECTOR_TYPES:
            return f"isinstance(..., {', '.join(sorted(names & DETECTOR_TYPES))})"
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("startswith",
                                                                                                   "endswith"):
        for arg in node.args:
            consts = [c.value for c in ast.walk(arg) if isinstance(c, ast.Constant) and isinstance(c.value, str)]
            if any(c.startswith("efficientdet") for c in consts):
                return f"{node.func.attr}({consts[0]!r})"
    if isinstance(node, ast.Compare):
        for side in (node.left, *node.comparators):
            if isinstance(side, ast.Constant) and isinstance(side.value, str) and side.value in KIND_WORDS:
                return f"compares with {side.value!r}"
            if isinstance(side, ast.Attribute) and side.attr in ("kind", "task"):
                return f"compares .{side.attr}"
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "hasattr":
        if len(node.args) > 1 and isinstance(node.args[1], ast.Constant) and node.args[1].value in (
                "box_net", "class_net", "classifier", "fpn", "module"):
            return f"hasattr(..., {node.args[1].value!r})"
    return None


def detector_questions(source: str) -> list[str]:
    return [f"line {node.lineno}: {why}" for node in ast.walk(ast.parse(source)) if (why := _asks(node))]


def test_the_question_finder_finds_questions():
    assert detector_questions("if is_detector_name(x): pass")
    assert detector_questions("ok = isinstance(m.config, DetectorConfig)")
    assert detector_questions("if name.startswith('efficientdet_'): pass")
    assert detector_questions("if served.kind == 'classify': pass")
    assert detector_questions("if cfg.task != other.task: pass")
    assert detector_questions("c = m.module.config if hasattr(m, 'module') else m.config")
    assert detector_questions("m = name.startswith('efficientdet')")
    assert not detector_questions("k.startswith('classifier.')\nTASKS[task_name](model)\nrecipe = 'paper'\nif x == 'torch': pass")


def test_only_the_resolver_asks_whether_a_model_is_a_detector():
    """Classifier or detector is decided once (``models/zoo/registry.py``: by the name, or the saved config's kind);
    everything else dispatches on its answer through a table (``effnet/tasks.py``)."""
    found = {name: detector_questions(path.read_text()) for name, path in all_modules().items() if name != RESOLVER}
    found[DISPATCH] = [line for line in found[DISPATCH] if not line.endswith("uses task_of")]
    offenders = {name: lines for name, lines in found.items() if lines}
    assert not offenders, offenders


def test_no_commands_module_imports_another_packages_commands():
    """Each task package's commands stand alone: flags two commands share live in a library module
    (``train/arguments.py``, ``deploy/options.py``), never in another package's ``commands``."""
    offenders = [f"{name} imports {t}" for name, targets in import_graph().items() if name.endswith(".commands")
                 for t in targets if t.endswith(".commands") and package_of(t) != package_of(name)]
    assert not offenders, offenders


def test_the_two_tasks_are_equal_packages():
    """Classification and detection each own their task, evaluation, prediction, export and serving modules."""
    for pkg in ("classify", "detect"):
        names = {p.stem for p in (PACKAGE_DIR / pkg).glob("*.py")}
        assert {"task", "evaluate", "predict", "export", "served", "commands"} <= names, (pkg, names)


def test_detector_saved_before_the_task_packages_still_loads():
    """tests/data holds a small EfficientDet written by commit d77e2bf (before effnet/classify and the one resolver)
    with its raw outputs; effnet.load, the resolver and the detector loader rebuild it and give the same outputs."""
    import torch
    from safetensors.torch import load_file

    import effnet
    from effnet.models.zoo.registry import load_detector
    from effnet.models.zoo.registry import load_model, task_of

    data = Path(__file__).parent / "data"
    path = data / "tiny_detector_saved_by_d77e2bf.safetensors"
    expected = load_file(data / "tiny_detector_saved_by_d77e2bf.expected.safetensors")
    for model in (effnet.load(path).eval(), load_model(str(path), task="detect"), load_detector(path).eval()):
        assert task_of(model) == "detect" and model.config.class_names == ("a", "b", "c")
        with torch.no_grad():
            class_out, box_out = model(expected["input"])
        for level, (c, b) in enumerate(zip(class_out, box_out), start=3):
            assert torch.allclose(c, expected[f"class_p{level}"], atol=1e-5)
            assert torch.allclose(b, expected[f"box_p{level}"], atol=1e-5)
    with pytest.raises(Exception, match="a detector"):
        load_model(str(path), task="classify")


# ---------------------------------------------------------------------------------------------- one object per task

# where a task's name may stand; effnet.extras names pip's `effnet[detect]` extra, a distribution's name
TASK_PLACES = ("effnet.classify", "effnet.detect", "effnet.segment", RESOLVER, DISPATCH, "effnet.cli", "effnet.extras")
MAX_FUNCTION_LINES, MAX_MODULE_LINES = 60, 400


def task_names() -> set[str]:
    import effnet.tasks

    return {task.name for task in effnet.tasks.all_tasks()}


def _keyed_on_kind(node: ast.AST) -> bool:
    """``TABLE[x.kind]``, ``TABLE[x.task]``, ``TABLE.get(x.kind)``: a table keyed by what kind a thing is."""
    if isinstance(node, ast.Subscript):
        keys = [node.slice]
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("get", "pop"):
        keys = node.args[:1]
    else:
        return False
    return any(isinstance(n, ast.Attribute) and n.attr in ("kind", "task") for key in keys for n in ast.walk(key))


def kind_lookups(source: str) -> list[str]:
    return [f"line {node.lineno}" for node in ast.walk(ast.parse(source)) if _keyed_on_kind(node)]


def task_literals(source: str, names: set[str]) -> list[str]:
    return [f"line {node.lineno}: {node.value!r}" for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Constant) and node.value in names]


def _imported_names(tree: ast.AST) -> set[str]:
    """Names an import binds (``import x``, ``from torch import nn``, ``from .m import f``): what another module
    owns, so a private attribute reached through them crosses a module."""
    return {(alias.asname or alias.name).split(".")[0] for node in ast.walk(tree)
            if isinstance(node, (ast.Import, ast.ImportFrom)) for alias in node.names}


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_crossings(source: str) -> list[str]:
    """A private name taken from another module: ``from m import _x``, ``from pkg._mod import x``, or
    ``name._x`` / ``name.sub._x`` on an imported name (effnet's own or a library's)."""
    tree = ast.parse(source)
    modules = _imported_names(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            path = (node.module or "").split(".")
            found += [f"line {node.lineno}: from {node.module} import {a.name}" for a in node.names
                      if _private(a.name) or any(_private(p) for p in path)]
        elif isinstance(node, ast.Import):
            found += [f"line {node.lineno}: import {a.name}" for a in node.names
                      if any(_private(p) for p in a.name.split("."))]
        elif isinstance(node, ast.Attribute) and _private(node.attr):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in modules:
                found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def long_functions(source: str, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    return [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)" for node in ast.walk(ast.parse(source))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > limit]


POSTPROCESS = "effnet.detect.pipeline"  # the one module that turns a detector's raw outputs into boxes
BOX_OPS = "effnet.detect.boxes"  # where the box operations are defined
POSTPROCESS_NAMES = {"postprocess", "decode", "nms", "batched_nms"}


def postprocessing_calls(source: str) -> list[str]:
    """Where ``source`` imports or uses detection post-processing (decode, NMS) itself. A method called
    ``.decode`` (bytes) is something else; ``.nms`` / ``.postprocess`` / ``.batched_nms`` on a module is not."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            found += [f"line {node.lineno}: imports {a.name}" for a in node.names if a.name in POSTPROCESS_NAMES]
        elif isinstance(node, ast.Name) and node.id in POSTPROCESS_NAMES and isinstance(node.ctx, ast.Load):
            found.append(f"line {node.lineno}: {node.id}")
        elif isinstance(node, ast.Attribute) and node.attr in POSTPROCESS_NAMES - {"decode"}:
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def test_the_rule_finders_find_what_they_look_for():
    assert kind_lookups("ENDPOINTS[served.kind]") and kind_lookups("x = TABLE.get(model.task)")
    assert not kind_lookups("served.task.route.path\nTASKS[name]")
    assert task_literals("x = {'detect': 1}", {"detect"}) and not task_literals("'detector'", {"detect"})
    assert private_crossings("from .export import _match")
    assert private_crossings("from torchvision.models._meta import CATEGORIES")
    assert private_crossings("import torch\ntorch.ops.mkldnn._is_supported()")
    assert private_crossings("from torch import nn\nisinstance(m, nn.modules.batchnorm._BatchNorm)")
    assert not private_crossings("self._x = 1\nobj._cache.clear()\nimport torch\ntorch.__version__")
    assert long_functions("def f():\n" + "    x = 1\n" * 61) and not long_functions("def f():\n    pass\n")
    assert postprocessing_calls("from .boxes import postprocess") and postprocessing_calls("torchvision.ops.nms(b, s, 0.5)")
    assert not postprocessing_calls("text = data.decode('utf-8')")


def test_no_table_is_keyed_by_a_kind():
    """A task's route, wording and options live in its task object; nothing looks them up by its name."""
    offenders = {name: lines for name, path in all_modules().items() if (lines := kind_lookups(path.read_text()))}
    assert not offenders, offenders


def test_task_names_stand_only_in_the_task_packages_the_resolver_and_the_list():
    names = task_names()
    assert {"classify", "detect"} <= names
    offenders = {name: lines for name, path in all_modules().items()
                 if not name.startswith(TASK_PLACES) and (lines := task_literals(path.read_text(), names))}
    assert not offenders, offenders


def test_no_private_name_crosses_a_module():
    offenders = {name: lines for name, path in all_modules().items() if (lines := private_crossings(path.read_text()))}
    assert not offenders, offenders


def test_functions_and_modules_are_short_enough_to_read():
    long = {name: found for name, path in all_modules().items() if (found := long_functions(path.read_text()))}
    big = {name: n for name, path in all_modules().items() if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long and not big, (long, big)


def test_detection_post_processing_is_called_from_one_module():
    """Decode + NMS is put together once (``detect/pipeline.py``: ``DetectionPipeline``); evaluation, prediction,
    serving, the exports and their verification all call the pipeline."""
    offenders = {name: lines for name, path in all_modules().items() if name not in (POSTPROCESS, BOX_OPS)
                 and (lines := postprocessing_calls(path.read_text()))}
    assert not offenders, offenders
    assert postprocessing_calls((PACKAGE_DIR / "detect" / "pipeline.py").read_text())  # the rule sees the real one


FAMILIES = "effnet.models.nets.families"
FAMILY_BUILDERS = ("efficientnet_config", "v2_config")  # each family module's one name -> config function


def family_builder_calls(source: str) -> list[str]:
    """Lines calling a family module's own config builder (the families module is the one place that does)."""
    return [ast.unparse(node) for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Call)
            and (getattr(node.func, "id", None) or getattr(node.func, "attr", None)) in FAMILY_BUILDERS]


def test_a_name_becomes_a_config_in_one_place():
    """Both families' names resolve through ``families.classifier_config``: no other module builds a config from a
    family's own table, so a third family is one module plus its line in ``FAMILIES``."""
    assert family_builder_calls("x = v2_config('efficientnetv2_s')") and not family_builder_calls("classifier_config(n)")
    homes = {FAMILIES, "effnet.models.nets.config", "effnet.models.nets.efficientnet_v2"}
    offenders = {name: lines for name, path in all_modules().items()
                 if name not in homes and (lines := family_builder_calls(path.read_text()))}
    assert not offenders, offenders
