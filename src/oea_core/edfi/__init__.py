"""The Ed-Fi module: land from an Ed-Fi ODS/API or export, apply upserts and deletes, refine."""
