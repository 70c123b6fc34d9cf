"""`pachctl tui`: a Textual app that browses repos, commits, files, the
provenance graph, jobs, datums and logs, live. A client of mountd's API only."""
