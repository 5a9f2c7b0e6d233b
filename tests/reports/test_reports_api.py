"""advlab.reports: a pinned public API, and a layer the library never depends on (STYLE 8)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import advlab
import advlab.reports as reports

EXPECTED = {"accuracy_curve", "bound_cdf_figure", "cosine_figure", "decision_map_figure", "decision_maps_figure", "fooling_gallery", "gallery",
            "gallery_from_result", "minimal_norms_figure", "policy_return_figure", "subspace_dim_figure",
            "transfer_heatmap", "write_report", "write_table",
            "signal_gallery", "signal_gallery_from_result", "changed_features_table", "changed_features_from_result"}
SRC = Path(advlab.__file__).parent
# The layers above the library that may use reports: the CLI and the jobs it runs.
CONSUMERS = {"reports", "cli.py", "runs", "reproduce"}  # the layers over the library


def test_all_is_pinned_and_documented() -> None:
    assert set(reports.__all__) == EXPECTED and len(reports.__all__) == len(EXPECTED)
    for name in reports.__all__:
        obj = getattr(reports, name)
        assert callable(obj) and obj.__doc__ and obj.__doc__.strip(), name


def test_no_library_module_imports_reports() -> None:
    pattern = re.compile(r"^\s*(from\s+advlab(\.reports\b|\s+import\s+.*\breports\b)|import\s+advlab\.reports\b)",
                         re.MULTILINE)
    offenders = [str(p.relative_to(SRC)) for p in SRC.rglob("*.py")
                 if not CONSUMERS & set(p.relative_to(SRC).parts)
                 and pattern.search(p.read_text(encoding="utf-8"))]
    assert offenders == []
    assert len(list(SRC.rglob("*.py"))) > 10  # the scan saw the package
    assert pattern.search("from advlab.reports import gallery")  # the pattern itself works


def test_rendering_leaves_pyplot_alone_and_the_library_does_not_load_reports() -> None:
    code = (
        "import sys\n"
        "import advlab.attacks, advlab.evaluation\n"
        "assert 'advlab.reports' not in sys.modules\n"
        "from advlab.evaluation import EvalRow, Evaluation\n"
        "from advlab.reports import accuracy_curve\n"
        "row = EvalRow('FGSM', 0.1, 'linf', 10, 9, 5, 0.9, 0.5, 4/9, 0.1, 0.1, 9, 0.1)\n"
        "accuracy_curve(Evaluation(rows=[row])).canvas.draw()\n"
        "print('pyplot' if 'matplotlib.pyplot' in sys.modules else 'clean')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "clean"
