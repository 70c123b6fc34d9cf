"""The Go-client walkthrough's feed.go, with pachy's Python client.

Creates the `projects` repo, commits one project name per commit (files 0, 1,
2, ... as in the walkthrough), creates the `stats` pipeline that runs
/stats.sh in the pachy-example/stats image (examples/stats/build.sh makes it)
over every project with the 1.x reduce method, waits for the last job and
prints /results of each output commit.

    .venv/bin/python examples/stats/feed.py            # the embedded daemon (or ADDRESS)
    .venv/bin/python examples/stats/feed.py 127.0.0.1:30650
"""

from __future__ import annotations

import sys

from pachctl.client import Client

# Projects whose Go sources the image carries (Debian's golang-*-dev packages).
PROJECTS = ["docker/docker", "spf13/cobra", "influxdata/influxdb", "prometheus/common", "moby/buildkit"]

STDIN = [
    "for filename in /pfs/projects/*; do",
    "REPONAME=`cat $filename`",
    "source /stats.sh >> /pfs/out/results",
    "done",
]

PIPELINE = {
    "pipeline": {"name": "stats"},
    "transform": {"image": "pachy-example/stats", "cmd": ["/bin/bash"], "stdin": STDIN},
    # The walkthrough asked for "reduce" meaning "as data is committed, the pipeline will only
    # see the new data" (an early Pachyderm's reduce). The 1.x docs define reduce as FILE + NONE
    # (every job sees every project) and pachy follows the docs, where `>> /pfs/out/results`
    # would then repeat earlier projects' lines; FILE + DIFF is what the walkthrough meant.
    "inputs": [{"repo": {"name": "projects"}, "method": {"partition": "FILE", "incremental": "DIFF"}}],
}


def main(argv: list[str]) -> int:
    # Connect to pachy (the walkthrough: client.NewFromAddress("0.0.0.0:30650")).
    c = Client.new_from_address(argv[0]) if argv else Client()
    with c:
        c.create_repo("projects")
        c.create_pipeline(PIPELINE)
        commits = []
        for idx, project in enumerate(PROJECTS):
            commit = c.start_commit("projects", "master")
            c.put_file("projects", commit.id, str(idx), project.encode())
            c.finish_commit("projects", commit.id)
            commits.append(commit.id)
        for out in c.flush_commit([("projects", commits[-1])]).commits:
            if out["repo"] == "stats":
                sys.stdout.write(c.read_file("stats", out["id"], "/results").decode())
        for job in c.list_job("stats"):
            print(f"job {job.id}: {job.state}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
