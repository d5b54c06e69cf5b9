"""Write the dashboards built in grafana/tracker_dashboards/ to grafana/dashboards/*.json.

    python grafana/generate.py          # regenerate the committed JSON
    python grafana/generate.py --check  # exit 1 if the committed JSON is not what the code builds

Needs the dev dependencies (``pip install -e '.[dev]'``: grafana-foundation-sdk).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "dashboards"

if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from tracker_dashboards import render_all  # noqa: E402


def stale(output: Path = OUTPUT) -> list[str]:
    """File names under ``output`` whose content differs from what the code generates."""
    return [
        name
        for name, text in render_all().items()
        if not (output / name).is_file() or (output / name).read_text(encoding="utf-8") != text
    ]


def write(output: Path = OUTPUT) -> list[str]:
    """Write every dashboard; returns the names of the files that changed."""
    changed = stale(output)
    output.mkdir(parents=True, exist_ok=True)
    for name, text in render_all().items():
        (output / name).write_text(text, encoding="utf-8")
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="fail if the committed JSON is out of date"
    )
    args = parser.parse_args(argv)
    if args.check:
        out_of_date = stale()
        for name in out_of_date:
            print(
                f"{OUTPUT / name} is out of date: run python grafana/generate.py", file=sys.stderr
            )
        return 1 if out_of_date else 0
    for name in write():
        print(f"wrote {OUTPUT / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
