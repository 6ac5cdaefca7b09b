"""A missing optional package is one error naming the extra that installs it."""

from __future__ import annotations

import sys

import pytest

from oea_core import MissingExtraError, OEAError, SqlPreview
from oea_core.extras import EXTRAS, require


def test_every_optional_package_names_an_extra_of_the_project():
    from pathlib import Path

    import tomllib

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    for package, (extra, _) in EXTRAS.items():
        wanted = package.split(".")[0].replace("azure", "azure-")
        assert any(dep.startswith(wanted) for dep in extras[extra]), (package, extra)
    assert require("duckdb").__name__ == "duckdb"


@pytest.mark.parametrize("package", sorted(EXTRAS))
def test_a_missing_package_says_which_extra_to_install(package, monkeypatch):
    monkeypatch.setitem(sys.modules, package, None)  # what `import` sees when the package is not installed
    with pytest.raises(MissingExtraError, match=rf"pip install 'oea-core\[{EXTRAS[package][0]}\]'") as info:
        require(package)
    assert isinstance(info.value, OEAError)


def test_the_sql_preview_without_duckdb_is_that_error(lake, monkeypatch):
    monkeypatch.setitem(sys.modules, "duckdb", None)
    with pytest.raises(MissingExtraError, match=r"the SQL preview \(oea sql\) needs the duckdb package"):
        SqlPreview(lake)
