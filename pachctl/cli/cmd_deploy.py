"""deploy (local, custom, amazon, google, microsoft), undeploy, port-forward:
pachy on a Kubernetes cluster, with the seed's command lines (1.x docs ch. 2, 6).

``pachctl deploy --dry-run`` prints the objects (for ``kubectl apply -f -`` or
``kubectl delete -f -``); without it they are applied through the kubeconfig's
current context and ``deploy`` waits until pachd is ready. ``pachctl daemon``
runs pachy on this machine, without Kubernetes.
"""

from __future__ import annotations

import argparse
import os
import sys

from mountd.models import errors
from pachctl.cli.common import add

TARGETS = ("local", "custom", "amazon", "google", "microsoft")
GCS_ENDPOINT = "https://storage.googleapis.com"  # GCS's S3-compatible (interoperability) API


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _storage_tail(args: argparse.Namespace, what: str) -> tuple[str | None, str | None]:
    """The seed's trailing ``[STORAGE_NAME] STORAGE_SIZE``: (name, size); one value is the size."""
    rest = list(getattr(args, "storage", None) or [])
    if len(rest) > 2:
        raise errors.InvalidArgument(f"deploy {args.target}: too many arguments: expected {what}")
    if len(rest) == 2:
        return rest[0], rest[1]
    return None, (rest[0] if rest else None)


def _s3(args: argparse.Namespace, bucket_arg: str, bucket_flag: str):
    from kube.deploy import S3Options
    from kube.objects import check_bucket

    bucket, prefix = check_bucket(bucket_arg, bucket_flag)
    endpoint = args.endpoint
    if endpoint and not endpoint.startswith(("http://", "https://")):
        raise errors.InvalidArgument(f"--endpoint: '{endpoint}' is not a URL (http://HOST:PORT or https://HOST)")
    return S3Options(bucket, prefix, region=args.region, endpoint=endpoint,
                     access_key=args.access_key or os.environ.get("AWS_ACCESS_KEY_ID"),
                     secret_key=args.secret_key or os.environ.get("AWS_SECRET_ACCESS_KEY"))


def build_options(args: argparse.Namespace):
    """Flags and arguments -> DeployOptions, every value checked (an error names its flag)."""
    from kube import objects as ko
    from kube.deploy import DeployOptions, S3Options

    target = args.target or "local"
    o = DeployOptions(target=target)
    if args.namespace:
        o.namespace = ko.check_namespace(args.namespace)
    if args.registry:
        o.registry = ko.check_registry(args.registry)
    if args.image:
        o.image = ko.check_image(args.image)
    if args.image_pull_secret:
        o.image_pull_secret = ko.check_name(args.image_pull_secret, "--image-pull-secret")
    if args.storage_class:
        o.storage_class = ko.check_name(args.storage_class, "--storage-class")
    o.token = args.token or None
    o.cpu = ko.parse_cpu(args.cpu, "--cpu")
    o.memory = ko.parse_memory(args.memory, "--memory")
    if args.memory_limit:
        o.memory_limit = ko.parse_memory(args.memory_limit, "--memory-limit")
    o.node_port = ko.check_port(args.node_port, "--node-port", 30000, 32767)
    o.cluster_domain = ko.check_name(args.cluster_domain, "--cluster-domain")
    storage_name, size = None, None
    if target == "local":
        if not os.path.isabs(args.host_path):
            raise errors.InvalidArgument(f"--host-path: '{args.host_path}' is not an absolute path")
        o.host_path = args.host_path
    elif target == "custom":
        if not args.bucket:
            raise errors.InvalidArgument("deploy custom needs --bucket BUCKET[/PREFIX] (and --endpoint "
                                         "for a store that is not AWS S3: MinIO, Ceph, a gateway)")
        o.s3 = _s3(args, args.bucket, "--bucket")
    elif target == "amazon":
        storage_name, size = _storage_tail(args, "BUCKET ID KEY TOKEN REGION [STORAGE_NAME] STORAGE_SIZE")
        o.s3 = S3Options(*ko.check_bucket(args.bucket_name, "BUCKET"), region=args.aws_region,
                         endpoint=args.endpoint, access_key=args.aws_id, secret_key=args.aws_key,
                         session_token=args.aws_token or None)
    elif target == "google":
        storage_name, size = _storage_tail(args, "BUCKET [STORAGE_NAME] STORAGE_SIZE")
        args.endpoint = args.endpoint or GCS_ENDPOINT
        args.region = args.region or "auto"  # GCS signs S3 requests in any region: 'auto'
        o.s3 = _s3(args, args.bucket_name, "BUCKET")
        if not (o.s3.access_key and o.s3.secret_key):
            raise errors.InvalidArgument(
                "deploy google needs HMAC keys for GCS's S3 interoperability API: --access-key and "
                "--secret-key (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY); make them with "
                "'gsutil hmac create SERVICE_ACCOUNT_EMAIL'")
    elif target == "microsoft":
        storage_name, size = _storage_tail(args, "CONTAINER STORAGE_NAME KEY [VOLUME_URI] STORAGE_SIZE")
        if not args.endpoint:
            raise errors.InvalidArgument(
                "deploy microsoft needs --endpoint: Azure Blob Storage does not speak S3, and pachy "
                "stores objects through the S3 API; run an S3 gateway for the container (e.g. "
                "s3proxy with its azureblob backend) and pass its URL, e.g. --endpoint "
                "http://s3proxy.default.svc:80")
        args.access_key, args.secret_key = args.account, args.account_key
        o.s3 = _s3(args, args.container, "CONTAINER")
    if storage_name:
        label = "VOLUME_URI" if target == "microsoft" else "STORAGE_NAME"
        _say(f"note: {label} '{storage_name}' is not used: the metadata lives on the "
             "PersistentVolumeClaim pachd-metadata, provisioned by the cluster's StorageClass "
             "(--storage-class); to reuse an existing disk, make a PersistentVolume for it that "
             "this claim binds to")
    if args.metadata_size:
        o.metadata_size = ko.parse_size(args.metadata_size, "--metadata-size")
    elif size:
        o.metadata_size = ko.parse_size(size, "STORAGE_SIZE")
    return o


def deploy(args: argparse.Namespace) -> int:
    from kube import deploy as kd

    if args.output and not args.dry_run:
        raise errors.InvalidArgument("-o/--output only applies with --dry-run (what to print instead of applying)")
    if args.timeout <= 0:
        raise errors.InvalidArgument(f"--timeout: {args.timeout:g} is not a positive number of seconds")
    opts = build_options(args)
    if args.dry_run:
        objs = kd.manifests(opts)
        sys.stdout.write(kd.to_yaml(objs) if args.output == "yaml" else kd.to_json(objs))
        return 0
    return _apply(args, opts)


def _cluster(args: argparse.Namespace):
    from kube.cluster import connect
    from kube.objects import check_namespace

    if args.namespace:
        check_namespace(args.namespace)
    cluster = connect(args.kubeconfig, args.context, args.namespace)
    check_namespace(cluster.namespace, "the kubeconfig context's namespace")
    return cluster


def _apply(args: argparse.Namespace, opts) -> int:
    from kube import deploy as kd
    from kube.apply import apply, current_token, wait_ready
    from kube.validate import validate

    cluster = _cluster(args)
    opts.namespace = cluster.namespace
    # Re-deploying keeps the token clients already use, unless --token changes it.
    token = opts.token or current_token(cluster) or kd.new_token()
    objs = kd.manifests(opts, token)
    problems = validate(objs)
    if problems:  # a bug in the builders or a value that slipped through the checks
        raise errors.PfsError("the objects are not valid, nothing was applied:\n  " + "\n  ".join(problems))
    _say(f"deploying pachd ({opts.pachd_image}) to namespace '{cluster.namespace}' on {cluster.server} "
         f"(context '{cluster.context}')")
    apply(cluster, objs, _say)
    if args.no_wait:
        return 0
    wait_ready(cluster, args.timeout, _say)
    ns = cluster.namespace
    print(
        f"pachd is ready in namespace '{ns}'. Point pachctl at it with either:\n"
        f"  pachctl port-forward {'' if ns == 'default' else f'--namespace {ns} '}&   "
        "then: export ADDRESS=127.0.0.1:30650\n"
        f"  export ADDRESS=NODE:{opts.node_port}   (a node's address: kubectl get nodes -o wide)\n"
        "and give it the token:\n"
        f"  export PACHY_TOKEN=$(kubectl -n {ns} get secret {kd.TOKEN_SECRET} -o jsonpath='{{.data.token}}' "
        "| base64 -d)\n"
        "then: pachctl version"
    )
    return 0


def undeploy(args: argparse.Namespace) -> int:
    from kube.apply import undeploy as remove

    cluster = _cluster(args)
    n = remove(cluster, args.all, _say)
    if n == 0:
        _say(f"nothing of pachy's in namespace '{cluster.namespace}' (context '{cluster.context}')")
    return 0


def port_forward(args: argparse.Namespace) -> int:
    from kube.objects import check_port
    from kube.portforward import port_forward as forward

    check_port(args.port, "--port")
    forward(_cluster(args), args.port, args.address, _say)
    return 0


def _cluster_flags(p: argparse.ArgumentParser, d) -> None:
    p.add_argument("--namespace", default=d(None), help="namespace (default: the kubeconfig context's, else 'default')")
    p.add_argument("--kubeconfig", default=d(None), help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)")
    p.add_argument("--context", default=d(None), help="kubeconfig context (default: its current one)")


def _common(p: argparse.ArgumentParser, sub: bool) -> None:
    """Flags every target takes. On the target's parser their defaults are
    suppressed, so 'deploy --dry-run local' and 'deploy local --dry-run' agree."""

    def d(value):
        return argparse.SUPPRESS if sub else value

    p.add_argument("--dry-run", action="store_true", default=d(False),
                   help="print the objects instead of applying them (for kubectl apply/delete -f -)")
    p.add_argument("-o", "--output", choices=("json", "yaml"), default=d(None),
                   help="with --dry-run: json (a List, the default) or yaml (one document per object)")
    _cluster_flags(p, d)
    p.add_argument("--registry", default=d(None), metavar="HOST[:PORT][/PATH]",
                   help="where the pachy image was pushed: the image is REGISTRY/pachy:VERSION")
    p.add_argument("--image", default=d(None), help="the whole pachy image reference (overrides --registry)")
    p.add_argument("--image-pull-secret", default=d(None), metavar="SECRET",
                   help="a Secret with the registry's credentials, for pachd and the worker pods")
    p.add_argument("--token", default=d(None), help="the API token (default: keep the deployed one, else a new one)")
    p.add_argument("--metadata-size", default=d(None), metavar="SIZE",
                   help="size of the metadata volume: GiB (10) or a quantity (10Gi); default 10Gi")
    p.add_argument("--storage-class", default=d(None), help="StorageClass of the metadata volume (default: the cluster's)")
    p.add_argument("--cpu", default=d("250m"), help="pachd's CPU request (default 250m)")
    p.add_argument("--memory", default=d("512Mi"), help="pachd's memory request (default 512Mi)")
    p.add_argument("--memory-limit", default=d(None), help="pachd's memory limit (default: none)")
    p.add_argument("--node-port", type=int, default=d(30650), help="the Service's NodePort (default 30650)")
    p.add_argument("--cluster-domain", default=d("cluster.local"), help="the cluster's DNS domain (default cluster.local)")
    p.add_argument("--timeout", type=float, default=d(300.0), metavar="SECONDS",
                   help="how long to wait for pachd to be ready (default 300)")
    p.add_argument("--no-wait", action="store_true", default=d(False), help="apply and return without waiting")


def _s3_flags(p: argparse.ArgumentParser, keys: bool = True) -> None:
    p.add_argument("--region", help="the bucket's region")
    p.add_argument("--endpoint", metavar="URL", help="S3 endpoint for a store that is not AWS (MinIO, Ceph, a gateway)")
    if keys:
        p.add_argument("--access-key", help="S3 access key id (default: $AWS_ACCESS_KEY_ID)")
        p.add_argument("--secret-key", help="S3 secret key (default: $AWS_SECRET_ACCESS_KEY)")


def register(sub) -> None:
    p = add(sub, "deploy", "Deploy pachy on Kubernetes (default target: local), or print the objects with --dry-run.", deploy)
    _common(p, sub=False)
    p.add_argument("--host-path", default="/var/pachy", help="local: the nodes' directory for objects (default /var/pachy)")
    p.set_defaults(target=None)
    targets = p.add_subparsers(dest="target", metavar="TARGET")

    t = add(targets, "local", "Objects in a directory on the node (minikube, kind, one-node clusters).", deploy)
    _common(t, sub=True)
    t.add_argument("--host-path", default=argparse.SUPPRESS, help="the node's directory for objects (default /var/pachy)")

    t = add(targets, "custom", "Objects in any S3-compatible store (MinIO, Ceph, ...): --bucket, --endpoint.", deploy)
    _common(t, sub=True)
    t.add_argument("--bucket", help="BUCKET[/PREFIX]")
    _s3_flags(t)

    t = add(targets, "amazon", "Objects in an AWS S3 bucket.", deploy)
    t.usage = "pachctl deploy amazon BUCKET ID KEY TOKEN REGION [STORAGE_NAME] [STORAGE_SIZE] [flags]"
    _common(t, sub=True)
    t.add_argument("bucket_name", metavar="BUCKET")
    t.add_argument("aws_id", metavar="ID", help="AWS access key id")
    t.add_argument("aws_key", metavar="KEY", help="AWS secret access key")
    t.add_argument("aws_token", metavar="TOKEN", help="AWS session token ('' for none)")
    t.add_argument("aws_region", metavar="REGION")
    t.add_argument("storage", nargs="*", default=[], metavar="STORAGE",
                   help="[STORAGE_NAME] STORAGE_SIZE: the metadata volume's size in GiB (the seed's EBS "
                        "volume name is accepted and unused)")
    t.add_argument("--endpoint", metavar="URL", help="an S3 endpoint other than AWS's")

    t = add(targets, "google", "Objects in a GCS bucket, through its S3 interoperability API (HMAC keys).", deploy)
    t.usage = "pachctl deploy google BUCKET [STORAGE_NAME] [STORAGE_SIZE] --access-key ID --secret-key KEY [flags]"
    _common(t, sub=True)
    t.add_argument("bucket_name", metavar="BUCKET")
    t.add_argument("storage", nargs="*", default=[], metavar="STORAGE",
                   help="[STORAGE_NAME] STORAGE_SIZE: the metadata volume's size in GiB (the seed's disk "
                        "name is accepted and unused)")
    _s3_flags(t)

    t = add(targets, "microsoft", "Objects in an Azure Blob container, through an S3 gateway (--endpoint).", deploy)
    t.usage = ("pachctl deploy microsoft CONTAINER STORAGE_NAME KEY [VOLUME_URI] [STORAGE_SIZE] --endpoint URL "
               "[flags]")
    _common(t, sub=True)
    t.add_argument("container", metavar="CONTAINER")
    t.add_argument("account", metavar="STORAGE_NAME", help="the storage account name")
    t.add_argument("account_key", metavar="KEY", help="the storage account key")
    t.add_argument("storage", nargs="*", default=[], metavar="STORAGE",
                   help="[VOLUME_URI] STORAGE_SIZE: the metadata volume's size in GiB (the seed's VHD URI "
                        "is accepted and unused)")
    _s3_flags(t, keys=False)

    p = add(sub, "undeploy", "Delete pachy's objects and pipeline workers from the cluster "
                             "(the metadata volume only with --all).", undeploy)
    _cluster_flags(p, lambda v: v)
    p.add_argument("--all", action="store_true", help="also delete the metadata volume: repos, commits and pipelines are lost")

    p = add(sub, "port-forward", "Forward a local port to pachd in the cluster (blocks; run it with &).",
            port_forward, aliases=("portforward",))
    _cluster_flags(p, lambda v: v)
    p.add_argument("--port", type=int, default=30650, help="the local port (default 30650)")
    p.add_argument("--address", default="127.0.0.1", help="the local address to listen on (default 127.0.0.1)")
