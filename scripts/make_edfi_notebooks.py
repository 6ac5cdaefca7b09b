"""Writes the Ed-Fi notebooks (thin, output-free, one `parameters` cell each): python scripts/make_edfi_notebooks.py"""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

OUT = Path(__file__).resolve().parents[1] / "notebooks" / "edfi"
SETUP = ("import logging\n\n"
         "from oea_core.edfi import EdFiModule\n\n"
         "logging.basicConfig(level=logging.WARNING, format=\"%(message)s\")\n"
         "logging.getLogger(\"oea\").setLevel(logging.INFO)  # progress of long runs\n"
         "edfi = EdFiModule(lake_path)")


def notebook(name, cells):
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i}"
    nbformat.validate(nb)
    nbformat.write(nb, OUT / name)


def params(source):
    cell = new_code_cell(source)
    cell.metadata["tags"] = ["parameters"]
    return cell


notebook("EdFi_py.ipynb", [
    new_markdown_cell(
        "# EdFi_py: the Ed-Fi module\n\n"
        "The class notebook for Ed-Fi ODS/API data. The logic lives in the tested `oea_core.edfi` package; this "
        "notebook makes an `edfi` object over a lake and lists the refined tables and how each column is "
        "pseudonymized (from the module's metadata CSV).\n\n"
        "The lake is a local folder (`../../lake` by default) or an ADLS Gen2 URL. The salt comes from "
        "`OEA_SALT`, Key Vault (`OEA_KEYVAULT_URL`) or the lake's secret file; API credentials from "
        "`OEA_EDFI_CLIENT_ID` / `OEA_EDFI_CLIENT_SECRET`. Neither is ever shown here."),
    params('lake_path = "../../lake"\nmetadata_path = None  # None: the metadata CSV shipped with oea_core'),
    new_code_cell("from oea_core.edfi import EdFiModule\n\n"
                  "edfi = EdFiModule(lake_path, metadata=metadata_path)\n"
                  "print(f\"lake: {edfi.lake.root or edfi.lake.account}; metadata: {edfi.metadata.source}\")"),
    new_markdown_cell("## Refined tables\n\n"
                      "Each resource becomes a table in `stage2p/edfi`, and each of its arrays a child table keyed by "
                      "the parent's `id` and an ordinal. `hash` and `hash-no-lookup` columns become "
                      "`<column>_pseudonym`; `mask` columns become `*`. Tables with `hash` columns also get a "
                      "`_lookup` table in `stage2np`."),
    new_code_cell("for resource in edfi.metadata.resources():\n"
                  "    for entity in edfi.metadata.entities_of(resource):\n"
                  "        schema = edfi.metadata.schema(entity)\n"
                  "        protected = [f\"{c.name} ({c.op.value})\" for c in schema.columns if c.op.value != \"no-op\"]\n"
                  "        print(f\"{schema.table:<58} {len(schema.columns):>3} columns; \"\n"
                  "              f\"protected: {', '.join(protected) or '-'}\")"),
    new_markdown_cell("## Use\n\n"
                      "```python\n"
                      "edfi.land(\"path/to/export\")          # or edfi.land(api=\"https://host/api\")\n"
                      "edfi.ingest(refine=False)             # stage2np/edfi/<resource>: current state\n"
                      "edfi.refine()                         # stage2p/edfi/<entity>, stage2np lookups\n"
                      "edfi.read(\"stage2p\", \"students\").show()\n"
                      "```\n\n"
                      "`EdFi_1_land`, `EdFi_2_ingest` and `EdFi_3_refine` do this step by step."),
])

notebook("EdFi_1_land.ipynb", [
    new_markdown_cell(
        "# Ed-Fi: land (stage1np)\n\n"
        "Lands Ed-Fi data into `stage1np/edfi/<namespace>/<resource>/<batch>/`: from an Ed-Fi API when "
        "`api_url` is set (credentials from `OEA_EDFI_CLIENT_ID` / `OEA_EDFI_CLIENT_SECRET`; later runs fetch "
        "only changes and deletes since the last landed change version), else from the export folder "
        "`source_path`. Files landed before are skipped. Papermill parameters are in the next cell."),
    params('lake_path = "../../lake"\nsource_path = "../../test_data/edfi"\napi_url = ""\n'
           'resources = ""  # comma-separated; empty: every resource the module supports\n'
           'batch_id = None  # None: a new UTC timestamp (a flow passes its own)'),
    new_code_cell(SETUP),
    new_code_cell("wanted = [r.strip() for r in resources.split(\",\") if r.strip()] or None\n"
                  "if api_url:\n"
                  "    landed = edfi.land(api=api_url, resources=wanted, batch_id=batch_id)\n"
                  "else:\n"
                  "    landed = edfi.land(source_path, batch_id=batch_id)\n"
                  "print(f\"{len(landed.batches)} resource batches landed, {len(landed.already_landed)} files \"\n"
                  "      f\"already landed, {len(landed.empty)} empty files\")\n"
                  "for batch in landed.batches:\n"
                  "    print(f\"  {batch.namespace}/{batch.resource} {batch.batch_id}: {batch.records or batch.files}\")"),
])

notebook("EdFi_2_ingest.ipynb", [
    new_markdown_cell(
        "# Ed-Fi: ingest (stage2np current state)\n\n"
        "Applies every new landed batch to `stage2np/edfi/<resource>`, which holds the current version of every "
        "record: upserts by `id` (newest change wins), deletes applied. Records that cannot be read go to "
        "`stage2np/edfi/<resource>_rejected`; the run fails when they exceed `max_reject_share`. Running it "
        "again with nothing new changes nothing."),
    params('lake_path = "../../lake"\nmax_reject_share = 0.05'),
    new_code_cell(SETUP),
    new_code_cell("results = edfi.ingest(max_reject_share=max_reject_share, refine=False)\n"
                  "for result in results:\n"
                  "    print(f\"{result.table}: {len(result.batches)} new batches, {result.rows} records, \"\n"
                  "          f\"{result.rejected} rejected\")"),
])

notebook("EdFi_3_refine.ipynb", [
    new_markdown_cell(
        "# Ed-Fi: refine (stage2p, lookups in stage2np)\n\n"
        "Flattens the current state of each resource into typed tables: references become their key columns, "
        "descriptors their code values, arrays child tables. Identifiers are hashed and names, birth dates and "
        "contact details masked as the metadata CSV says, so `stage2p` holds no raw identifier, and the same "
        "student has the same pseudonym in every table. A resource is rebuilt only when its state changed."),
    params('lake_path = "../../lake"\nmax_reject_share = 0.05'),
    new_code_cell(SETUP),
    new_code_cell("results = edfi.refine(max_reject_share=max_reject_share)\n"
                  "rebuilt = [r for r in results if r.batches]\n"
                  "print(f\"{len(rebuilt)} tables rebuilt, {len(results) - len(rebuilt)} up to date\")"),
    new_markdown_cell("## Enrolments per school and grade, joined inside stage2p"),
    new_code_cell("from oea_core.errors import DeltaTableError\n\n"
                  "try:\n"
                  "    students = edfi.read(\"stage2p\", \"students\")\n"
                  "    enrolments = edfi.read(\"stage2p\", \"student_school_associations\")\n"
                  "    (enrolments.join(students, \"studentUniqueId_pseudonym\")\n"
                  "     .groupBy(\"schoolId\", \"entryGradeLevelDescriptor\").count()\n"
                  "     .orderBy(\"schoolId\", \"entryGradeLevelDescriptor\").show())\n"
                  "except DeltaTableError as exc:\n"
                  "    print(exc)"),
])
print("wrote", sorted(p.name for p in OUT.glob("*.ipynb")))
