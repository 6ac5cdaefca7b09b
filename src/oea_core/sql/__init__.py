"""SQL serving: serverless SQL view scripts, the view sets of modules and gold areas, and the local preview."""
