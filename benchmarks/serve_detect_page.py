"""Screenshot of `effnet serve`'s page for a detector: boxes and labels drawn over an uploaded image.

Trains a tiny detect-digits detector (or takes --run), starts `effnet serve --model RUN`, opens the page in
Debian's chromium with Playwright, uploads a validation image and saves benchmarks/results/serve_detect_page.png.

    python benchmarks/serve_detect_page.py [--run RUN_DIR] [--epochs 3] [--threshold 0.05]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "effnet.cli", *args], check=True, cwd=ROOT)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", help="a detector run directory (default: train a tiny one)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threshold", type=float, default=0.05)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "serve_detect_page.png"))
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "dd"
        cli("data", "detect-digits", str(data), "--count", "32")
        run = args.run or str(Path(tmp) / "run")
        if not args.run:
            cli("detect", "train", str(data), "--model", "efficientdet_lite0", "--pretrained-backbone", "--resolution",
                "128", "--epochs", str(args.epochs), "--batch-size", "8", "--out", run, "--quiet")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = subprocess.Popen([sys.executable, "-m", "effnet.cli", "serve", "--model", run, "--port", str(port)],
                                  cwd=ROOT)
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(240):
                try:
                    urllib.request.urlopen(f"{base}/health", timeout=2)
                    break
                except OSError:
                    time.sleep(0.5)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=shutil.which("chromium"), headless=True)
                page = browser.new_page(viewport={"width": 1000, "height": 640})
                page.goto(f"{base}/")
                page.wait_for_function("document.getElementById('model').textContent.includes('detect')")
                page.fill("#score_threshold", str(args.threshold))
                page.set_input_files("#file", str(sorted((data / "val").glob("*.jpg"))[0]))
                page.wait_for_selector("#preview[data-drawn='1']", timeout=60_000)
                print(f"{page.get_attribute('#boxes', 'data-boxes')} boxes drawn")
                page.screenshot(path=args.out, full_page=True)
                browser.close()
        finally:
            server.terminate()
            server.wait(timeout=60)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
