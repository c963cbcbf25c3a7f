import os

# Every process of the suite (this one, run_cli's children, subprocesses, servers) runs one OpenMP thread: two cores
# are shared by pytest, often a second command, sometimes other work, and there OpenMP's spinning threads slowed the
# tiny models the tests use several-fold, up to fiftyfold (test_kill_9_then_resume_is_bit_exact: 13 s on an idle
# machine, 77 s beside two CPU-bound processes on two threads; 11 s and 21-33 s on one; in-process tests ran as fast
# on one thread as on two). Set before numpy and torch load: OpenMP reads it once, when the library loads.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
# `effnet train` re-executes itself under tcmalloc when installed (effnet/train/allocator.py): ~2 s of start-up
# per command; tests keep the system allocator except test_train_runs_under_tcmalloc, which asks for it
os.environ.setdefault("EFFNET_MALLOC", "system")


@pytest.fixture(scope="session", autouse=True)
def _effnet_home(tmp_path_factory):
    """Exports, caches and downloads go to a folder of this session, as on a fresh machine: a run does not read
    what an earlier run left in ~/.cache/effnet (its timings and results do not depend on it) nor leave files
    there. Tests that need a home of their own still set $EFFNET_HOME themselves."""
    saved = os.environ.get("EFFNET_HOME")
    os.environ["EFFNET_HOME"] = str(tmp_path_factory.mktemp("effnet_home"))
    yield
    if saved is None:
        os.environ.pop("EFFNET_HOME", None)
    else:
        os.environ["EFFNET_HOME"] = saved


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


_FORK_SERVER: list = []  # the one ForkServer of this pytest process, started on first use


def _fork_server():
    from tests.forkrun import ForkServer

    if os.environ.get("EFFNET_TEST_SUBPROCESS") == "1":
        return None
    if not _FORK_SERVER or _FORK_SERVER[0].proc.poll() is not None:
        _FORK_SERVER[:] = [ForkServer(str(ROOT))]
    return _FORK_SERVER[0] if _FORK_SERVER[0].usable() else None


@pytest.fixture(scope="session", autouse=True)
def _stop_fork_server():
    yield
    for server in _FORK_SERVER:
        server.close()


# A hang guard, never a speed test: the longest command of the suite (Lite0's 3-epoch fine-tune on digits) takes
# about a minute on two idle cores; on a loaded machine several times that. Past this, it has hung.
HANG_S = 1200


def run_cli(*args: str, check: bool = True, timeout: float = HANG_S) -> subprocess.CompletedProcess:
    """Run the real `effnet` command in a process of its own: forked from a server that has imported torch and
    friends once (tests/forkrun.py), or, with EFFNET_TEST_SUBPROCESS=1, as `python -m effnet.cli`."""
    server = _fork_server()
    if server is not None:
        proc = server.run([str(a) for a in args], timeout)
    else:
        proc = subprocess.run([sys.executable, "-m", "effnet.cli", *args], capture_output=True, text=True,
                              timeout=timeout, cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"effnet {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def kill_when(proc, moment, timeout: float = HANG_S, look=None):
    """SIGKILL ``proc`` as soon as ``moment()`` returns something truthy (polled every few milliseconds); return
    that value. The command must not finish first: the moment is one it passes through.

    Each time ``look()`` (by default ``moment`` itself) says yes, ``proc`` is stopped (SIGSTOP) and ``moment()``
    asked: what is returned is what the command has done when it is killed. On busy cores it could otherwise run on
    past a short moment between the look and the kill. A moment that is slow to ask (reading a checkpoint) gets a
    cheap ``look`` (:func:`file_changes`): the command stands still while it is read, and cannot run past a window
    of a few steps while this process is busy reading."""
    import signal
    import time

    look = look or moment
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                _, err = proc.communicate()
                raise AssertionError(f"the command ended (rc {proc.returncode}) before the moment came:\n"
                                     f"{(err or '')[-2000:]}")
            if look():
                os.kill(proc.pid, signal.SIGSTOP)
                wait_stopped(proc.pid)
                seen = moment()
                if seen:
                    return seen  # killed below, where it stands
                os.kill(proc.pid, signal.SIGCONT)
            time.sleep(0.002)
        raise AssertionError("the moment never came")
    finally:  # whatever happened here (the moment, a failed look, an interrupt): no command left running or stopped
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.communicate()


def wait_stopped(pid: int) -> None:
    """Until SIGSTOP has taken effect (state T in /proc, or Z once it ended): the signal is delivered when the
    process next leaves the kernel, not when ``kill`` returns."""
    import time

    deadline = time.monotonic() + HANG_S
    while Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in "tTZ":
        assert time.monotonic() < deadline, f"process {pid} did not stop"
        time.sleep(0.0005)


def file_key(path: Path) -> tuple | None:
    """(inode, modification time, size) of ``path``, None while it is missing: what changes when the file is
    replaced or rewritten, from one ``stat`` -- cheap enough to ask every few milliseconds."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


def file_changes(path: Path):
    """A look for :func:`kill_when`: true each time ``path`` is there and replaced or rewritten since the last
    look (:func:`file_key`)."""
    last = [None]

    def look():
        key = file_key(path)
        changed, last[0] = key is not None and key != last[0], key
        return changed
    return look


def kill_in_second_epoch(args: list[str], out: Path) -> dict:
    """Run ``effnet ARGS --out OUT``, kill -9 it at its first checkpoint inside the second epoch (read while the
    command stands still, at each change of the file), and return that checkpoint's state."""
    proc = subprocess.Popen([sys.executable, "-m", "effnet.cli", *args, "--out", str(out)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # a pipe read at the end could fill
    ckpt = out / "checkpoint.pt"

    def second_epoch():
        state = read_checkpoint(ckpt)
        return state if state and state["epoch"] == 1 and state["batch_in_epoch"] > 0 else None

    return kill_when(proc, second_epoch, look=file_changes(ckpt))


def read_checkpoint(path: Path) -> dict | None:
    """A training checkpoint's state, None while it is missing or cannot be read whole."""
    try:
        return torch.load(path, weights_only=True)
    except Exception:  # not there yet, or being replaced right now
        return None


@pytest.fixture(scope="session")
def photos(tmp_path_factory) -> dict[str, Path]:
    """Real photos shipped with scikit-image, written as PNG files."""
    import skimage.data

    out = tmp_path_factory.mktemp("photos")
    paths = {}
    for name in ("chelsea", "coffee", "astronaut"):
        path = out / f"{name}.png"
        Image.fromarray(np.asarray(getattr(skimage.data, name)())).save(path)
        paths[name] = path
    return paths


@pytest.fixture(autouse=True)
def _torch_threads_restored():
    """A test that sets torch's thread count (the latency protocol runs on one thread) gives the next test its
    cores back: without this every later in-process test ran on one thread."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def randomize_bn(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial BatchNorm statistics so that weight-import tests check every tensor."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
                m.weight.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def photo_statistics(detector: torch.nn.Module, images: list) -> torch.nn.Module:
    """A random detector's BatchNorm statistics measured on real ``images`` (one "precise BN" pass), and box codes of a
    trained model's size (std ~0.2, not ~2): its detections then depend on the photo, as a trained model's do,
    instead of fading to the head's biases -- an exported graph that ignored its input would not pass. In eval mode."""
    from effnet.detect.predictor import preprocess

    for bn in (m for m in detector.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.reset_running_stats()
        bn.momentum = None  # the plain average over the pass
    with torch.no_grad():
        detector.train()(preprocess(detector.config, images)[0])
        detector.box_net.predict.pw.weight.mul_(0.1)
    return detector.eval()


@pytest.fixture(scope="session")
def digits(tmp_path_factory) -> Path:
    """scikit-learn's digits (real scans) written by the real `effnet data digits` command."""
    out = tmp_path_factory.mktemp("digits")
    proc = run_cli("data", "digits", str(out))
    assert "1437 train, 360 val" in proc.stdout
    assert len(list((out / "train").glob("*/*.png"))) == 1437
    return out


def digit_subset(digits: Path, out: Path, n_train: int, n_val: int, classes=("0", "1", "7")) -> Path:
    """A few classes with the first n images each: runs that need only seconds."""
    for split, n in (("train", n_train), ("val", n_val)):
        for cls in classes:
            (out / split / cls).mkdir(parents=True)
            for f in sorted((digits / split / cls).glob("*.png"))[:n]:
                shutil.copy(f, out / split / cls / f.name)
    return out


def config_file(folder: Path, name: str, **fields) -> Path:
    """A small EfficientNet written as a config .json (what `--model` / `--base` accept)."""
    from effnet.models.nets.config import ModelConfig

    path = folder / f"{name}.json"
    path.write_text(ModelConfig(name=name, **fields).to_json())
    return path


# ------------------------------------------------------------------------------------------------------ tiers
# `make check` (pytest -m quick) is the inner loop, `make test` runs every test. A test is quick unless it is listed
# here: those that train past a few steps, export, quantize or lower a real-sized network, start servers, browsers
# or extra interpreters, or wait on a real process by design -- each about 3 s or more on two idle cores (`make
# test` prints the slowest). A whole module is listed as ALL. A listed name that its module does not define stops
# the run, so that a renamed test cannot leave the table unnoticed.
ALL = "*"
SLOW: dict[str, str | frozenset[str]] = {
    "test_cli.py": frozenset({"test_convert_then_predict_with_weights", "test_family_table_and_chart", "test_info_prints_table_1_view", "test_predict_any_image_mode_and_bad_files"}),
    "test_cli_outputs.py": frozenset({"test_predict_output_makes_its_folders_and_resumes_a_cut_file"}),
    "test_deploy.py": frozenset({"test_int8_export_agrees_with_fp32_on_real_photos"}),
    "test_detect_backends.py": ALL,
    "test_detect_cli.py": frozenset({"test_effnet_export_takes_a_detector_run", "test_eval_scores_the_int8_graph_calibrated_on_train"}),
    "test_detect_model.py": frozenset({"test_end_to_end_onnx_export_matches_pytorch"}),
    "test_executorch.py": ALL,
    "test_exported_models.py": ALL,
    "test_int8_scheme.py": frozenset({"test_each_cpu_kinds_file_is_recorded_and_runs_on_the_other_path"}),
    "test_family.py": frozenset({"test_family_peers_cli_prints_table_2_and_draws_figures_1_and_5", "test_latency_protocol_times_a_pair_in_both_engines"}),
    "test_fault_injection.py": frozenset({"test_detect_train_killed_twice_resumes_bit_exact", "test_export_killed_while_verifying_and_between_fp32_and_int8"}),
    "test_hub.py": frozenset({"test_an_architecture_timm_cannot_build_is_refused_before_writing", "test_hf_hub_names_download_through_huggingface_hub_then_work_offline"}),
    "test_model.py": frozenset({"test_exact_parameter_counts"}),
    "test_openvino.py": ALL,
    "test_packaging.py": ALL,
    "test_predict_folder.py": ALL,
    "test_roofline.py": frozenset({"test_relu6_twin_differs_only_in_its_activations"}),
    "test_progressive.py": frozenset({"test_kill_9_in_the_middle_of_a_stage_then_resume_is_bit_exact", "test_progressive_fine_tune_logs_each_epochs_stage"}),
    "test_search.py": ALL,
    "test_search_budget.py": ALL,
    "test_serve.py": ALL,
    "test_serve_detect.py": ALL,
    "test_serve_limits.py": ALL,
    "test_serve_page.py": ALL,
    "test_segment_deploy.py": frozenset({"test_every_fp32_file_gives_pytorchs_masks_on_real_photos", "test_effnet_export_takes_a_segmenter_and_refuses_in_one_line", "test_predictor_backends_give_pytorchs_masks", "test_the_executorch_program_carries_its_config", "test_int8_keeps_fp32s_class_on_most_pixels"}),
    "test_segment.py": frozenset({"test_kill_9_then_resume_is_bit_exact", "test_torchrun_two_processes_end_identical", "test_train_eval_predict_through_the_cli"}),
    "test_segment_data.py": frozenset({"test_segment_digits_folder_appears_whole_or_not_at_all", "test_segment_digits_command"}),
    "test_serve_segment.py": ALL,
    "test_transform_layout.py": ALL,
    "test_study.py": ALL,
    "test_v2_cli.py": ALL,
    "test_v2_deploy.py": frozenset({"test_executorch_fp32_and_int8_programs", "test_explain_a_v2_on_a_photo_it_knows", "test_onnx_int8_export_agrees_with_fp32_on_real_photos", "test_openvino_fp32_and_int8_exports"}),
    "test_train.py": frozenset({"test_corrupt_files_are_skipped_and_counted", "test_empty_class_or_empty_dir_is_one_clear_error", "test_eval_matches_hand_computation", "test_finetune_pretrained_lite0_on_digits_reaches_97", "test_kill_9_then_resume_is_bit_exact", "test_nan_loss_stops_and_keeps_last_good_checkpoint", "test_torchrun_two_processes_end_identical", "test_train_runs_under_tcmalloc_and_learns_the_same"}),
    "test_v2_weights.py": frozenset({"test_convert_a_timm_v2_file_then_predict", "test_large_v2_file_converts_to_equal_logits"}),
}


# `make test` hands whole files to its two workers in collection order (pytest-xdist --dist loadfile): the longest
# files go first, so that the last file to start is a short one and neither worker runs alone at the end
HEAVY_FIRST = ("test_train.py", "test_executorch.py", "test_segment_deploy.py", "test_exported_models.py",
               "test_detect_backends.py", "test_v2_deploy.py")


def pytest_collection_modifyitems(config, items):
    """Mark each collected test ``slow`` (listed in SLOW) or ``quick`` (every other one); the heaviest files first."""
    modules = {item.path.name: item.module for item in items}
    for name, listed in SLOW.items():
        if not (Path(__file__).parent / name).is_file():
            raise pytest.UsageError(f"tests/conftest.py SLOW names {name}, which does not exist")
        missing = [] if name not in modules or listed == ALL else sorted(
            test for test in listed if not hasattr(modules[name], test))
        if missing:
            raise pytest.UsageError(f"tests/conftest.py SLOW names {', '.join(missing)}, not in {name}")
    for item in items:
        listed = SLOW.get(item.path.name, frozenset())
        slow = listed == ALL or getattr(item, "originalname", item.name) in listed
        item.add_marker(pytest.mark.slow if slow else pytest.mark.quick)
    heavy = {name: i for i, name in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: heavy.get(item.path.name, len(heavy)))  # stable: each file's order is kept
