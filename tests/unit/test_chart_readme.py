"""hack/chart_readme.py: the chart README's values table comes from the `# --` comments of values.yaml."""

from __future__ import annotations

import re
from pathlib import Path

import chart_readme
import pytest
from chart_readme import ChartDocError, ValueDoc, documented_keys, main, render

VALUES = """\
# A header comment, not documentation.

# -- Operator replicas. More than one
# turns on leader election.
replicas: 1

log:
  # -- Log level.
  level: info
  # -- Format | with a pipe.
  format: full

# -- Resources, documented as a whole.
resources:
  requests: {cpu: 100m}
"""


def test_each_documented_key_gets_its_path_description_and_default() -> None:
    assert documented_keys(VALUES) == [
        ValueDoc("replicas", "Operator replicas. More than one turns on leader election.", 1),
        ValueDoc("log.level", "Log level.", "info"),
        ValueDoc("log.format", "Format | with a pipe.", "full"),
        ValueDoc("resources", "Resources, documented as a whole.", {"requests": {"cpu": "100m"}}),
    ]


def test_the_table_escapes_pipes_and_shows_defaults_as_json() -> None:
    table = chart_readme.values_table(documented_keys(VALUES))
    assert '| `log.format` | `"full"` | Format \\| with a pipe. |' in table
    assert '| `resources` | `{"requests": {"cpu": "100m"}}` | Resources, documented as a whole. |' in table


def test_an_undocumented_value_is_an_error() -> None:
    with pytest.raises(ChartDocError, match=re.escape("values without a `# --` description: log.colour")):
        documented_keys(VALUES.replace("  format: full\n", "  format: full\n  colour: true\n"))


def test_a_comment_without_a_key_is_an_error() -> None:
    with pytest.raises(ChartDocError, match="must be followed by a key"):
        documented_keys("# -- Orphan.\n- item\n")


def test_check_fails_on_a_stale_readme_and_passes_once_written(tmp_path: Path) -> None:
    (tmp_path / "values.yaml").write_text(VALUES)
    (tmp_path / "README.md.in").write_text("# Chart\n\n{{VALUES_TABLE}}\n")
    assert main(["--check", "--chart", str(tmp_path)]) == 1  # no README yet
    assert main(["--chart", str(tmp_path)]) == 0
    assert main(["--check", "--chart", str(tmp_path)]) == 0
    (tmp_path / "values.yaml").write_text(VALUES.replace("replicas: 1", "replicas: 2"))
    assert main(["--check", "--chart", str(tmp_path)]) == 1


def test_the_committed_chart_readme_is_current() -> None:
    chart = chart_readme.CHART
    assert (chart / "README.md").read_text() == render(chart), "run `make chart-readme`"
