"""PPS: pipelines, datums and jobs (Pachyderm's pipeline system)."""
