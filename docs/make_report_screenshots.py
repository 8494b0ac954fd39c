"""Screenshots of report.html at 2, 3 and 8 tasks for docs/report.md.

    python docs/make_report_screenshots.py        # writes docs/images/report-n{2,3,8}.png

Runs the built-in digits example (``mapframe example --n-tasks N``, equal preference; about
a minute for all three on two cores, the checkpoints trained once and cached) into a
temporary folder and photographs each report in headless Chromium (Debian's chromium and
chromium-driver, driven by selenium). Needs ``pip install -e ".[example,test]"`` and Pillow
(which shrinks the PNGs below 300 KB).
"""

from __future__ import annotations

import io
import sys
import tempfile
import time
from pathlib import Path

from mapframe.cli import main as mapframe

IMAGES = Path(__file__).parent / "images"


def study_folder(root: Path, n: int) -> Path:
    folder = root / f"digits-{n}"
    status = mapframe(["example", "--n-tasks", str(n), "--preference", ",".join(["1"] * n),
                       "--output", str(folder), "--quiet", "--no-plot"])
    if status != 0:
        raise SystemExit(f"mapframe example --n-tasks {n} failed ({status})")
    return folder


def shoot(driver, page: Path, out: Path, max_height: int = 3000,
          max_bytes: int = 290_000) -> None:
    """A screenshot of the whole page (up to ``max_height`` pixels), as a palette PNG
    shrunk until it is below ``max_bytes``."""
    from PIL import Image

    driver.set_window_size(1200, 1000)
    driver.get(page.as_uri())
    for _ in range(300):
        if driver.execute_script("return window.mapframeRendered || 0"):
            break
        time.sleep(0.1)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1200, min(int(height) + 20, max_height))
    time.sleep(1.0)  # plotly redraws at the new size
    img = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    scale = 1.0
    while True:
        small = img.resize((int(img.width * scale), int(img.height * scale)),
                           Image.Resampling.LANCZOS) if scale < 1 else img
        buf = io.BytesIO()
        small.quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(buf, "PNG",
                                                                            optimize=True)
        if buf.tell() <= max_bytes or scale < 0.5:
            break
        scale *= 0.9
    out.write_bytes(buf.getvalue())
    print(f"{out}: {small.width}x{small.height}, {buf.tell() // 1024} KB")


def main() -> int:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                "--enable-unsafe-swiftshader"):
        opts.add_argument(arg)
    opts.binary_location = "/usr/bin/chromium"
    driver = webdriver.Chrome(options=opts, service=Service("/usr/bin/chromedriver"))
    IMAGES.mkdir(exist_ok=True)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for n in (2, 3, 8):
                folder = study_folder(Path(tmp), n)
                shoot(driver, folder / "report.html", IMAGES / f"report-n{n}.png")
    finally:
        driver.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
