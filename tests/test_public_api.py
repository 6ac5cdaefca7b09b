"""The public face: every name of ``oea_core.__all__`` imports, and ``import oea_core`` loads no heavy optional part."""

from __future__ import annotations

import json
import subprocess
import sys

import oea_core

HEAVY = ("oea_core.publish", "oea_core.submissions", "oea_core.district", "psycopg", "jsonschema")


def test_every_public_name_imports_and_is_listed():
    missing = [name for name in oea_core.__all__ if getattr(oea_core, name, None) is None]
    assert not missing, missing
    assert set(oea_core.__all__) <= set(dir(oea_core))


def test_import_oea_core_loads_no_heavy_optional_part_until_it_is_used():
    code = ("import json, sys, oea_core\n"
            f"before = [m for m in {HEAVY!r} if m in sys.modules]\n"
            "from oea_core import publish_postgres, submit_bundle\n"
            f"after = [m for m in {HEAVY!r} if m in sys.modules]\n"
            "print(json.dumps([before, after]))\n")
    before, after = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                              check=True).stdout)
    assert before == []
    assert {"oea_core.publish", "oea_core.submissions", "psycopg"} <= set(after)


def test_old_module_names_are_the_modules_at_their_new_homes():
    import oea_core.paths  # the name of earlier releases (oea_core/moved.py)
    from oea_core.sql_views import lake_database_ddl  # what OEA_lake_database.ipynb imports

    import oea_core.lake.paths
    import oea_core.sql.views

    assert oea_core.paths is oea_core.lake.paths
    assert lake_database_ddl is oea_core.sql.views.lake_database_ddl
    assert oea_core.lake.paths.__spec__.name == "oea_core.lake.paths"
