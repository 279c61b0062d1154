#!/bin/sh
# Build a Lambda-compatible python3.13 image offline, for
#   sam local invoke/start-api --invoke-image "$IMAGE" --skip-pull-image ...
# where the official public.ecr.aws/lambda/python:3.13 image cannot be pulled. Idempotent: does nothing when
# the image exists (FORCE=1 rebuilds it).
#
# What it is: Debian trixie's python3.13 (debootstrap, minbase) + awslambdaric and the runtime's boto3 from PyPI
# in /var/runtime, a /var/runtime/bootstrap that starts awslambdaric with Lambda's module path (function code,
# then the layers under /opt/python, then the runtime's boto3), and /var/rapid/aws-lambda-rie as entry point:
# SAM mounts its own runtime interface emulator there, as it does over the official image.
#
# x86_64 (linux/amd64) only: build the functions with `--parameter-overrides Architecture=x86_64` for local runs
# on an x86 machine (SAM builds its derived image for the function's platform; an arm64 function on this image
# fails with "does not match the specified platform").
# Networking: SAM 1.170 ignores `--docker-network host` (aws-sam-cli#4236); tools/sam_host_network.py forces
# host networking so the function reaches the local stack on 127.0.0.1.
#
# Needs: root (debootstrap), a Docker engine (tools/docker-up.sh), the Debian mirror apt uses, PyPI.
# Optional environment:
#   IMAGE          tag (default pluggy-pipeline/lambda-python3.13:x86_64)
#   ROOT           scratch folder for the root filesystem (default /var/tmp/pluggy-pipeline-lambda-rootfs; reused
#                  when it already holds the interpreter)
#   PIP            a pip >= 20.3 (default .venv/bin/pip, else pip3)
#   DEBIAN_MIRROR  Debian mirror (default: the first Debian URI of apt's sources, /etc/apt/sources.list*)
#   SUITE          Debian suite whose python3 is 3.13 (default trixie)
#   BOTO3_SPEC     the runtime's boto3 (default: the pin of pyproject.toml, as `make build` installs for invokes)
#   FORCE=1        rebuild even if the image exists
set -eu
cd "$(dirname "$0")/.."
PY_VERSION=3.13
IMAGE=${IMAGE:-pluggy-pipeline/lambda-python$PY_VERSION:x86_64}
ROOT=${ROOT:-/var/tmp/pluggy-pipeline-lambda-rootfs}
SUITE=${SUITE:-trixie}
FORCE=${FORCE:-0}

if [ "$FORCE" != 1 ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "lambda-image: $IMAGE exists (FORCE=1 rebuilds it)"
    exit 0
fi
case "$(uname -m)" in
    x86_64 | amd64) ;;
    *) echo "lambda-image: builds linux/amd64 images only; this machine is $(uname -m)" >&2; exit 1 ;;
esac
if [ "$(id -u)" != 0 ]; then
    echo "lambda-image: debootstrap needs root (run: sudo $0)" >&2
    exit 1
fi
started=$(date +%s)

if [ -z "${PIP:-}" ]; then
    if [ -x .venv/bin/pip ]; then PIP=.venv/bin/pip; else PIP=pip3; fi
fi
if [ -z "${BOTO3_SPEC:-}" ]; then
    BOTO3_SPEC=$(grep -o '"boto3==[^"]*"' pyproject.toml | tr -d '"' | head -n 1)
    BOTO3_SPEC=${BOTO3_SPEC:-boto3}
fi

# The Debian mirror apt uses: deb822 `URIs:` lines of *.sources, or the URI of one-line `deb` entries;
# the first that is a Debian archive (not its security archive, which has no full suites).
debian_mirror() {
    for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list; do
        [ -f "$file" ] || continue
        case "$file" in *.sources) awk '/^[[:space:]]*URIs:/ {for (i = 2; i <= NF; i++) print $i}' "$file" ;;
            *) awk '$1 == "deb" {for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i !~ /\]$/) {print $i; break}}' "$file" ;;
        esac
    done | grep -E '/debian/?$' | head -n 1
}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-$(debian_mirror)}
if [ -z "$DEBIAN_MIRROR" ]; then
    echo "lambda-image: no Debian mirror in apt's sources; set DEBIAN_MIRROR" >&2
    exit 1
fi

if ! command -v debootstrap >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q debootstrap >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q debootstrap >/dev/null; }
fi
if [ ! -x "$ROOT/usr/bin/python$PY_VERSION" ]; then
    echo "lambda-image: debootstrap $SUITE from $DEBIAN_MIRROR into $ROOT"
    rm -rf "$ROOT"
    debootstrap --variant=minbase --arch=amd64 --include="python$PY_VERSION,ca-certificates" \
        "$SUITE" "$ROOT" "$DEBIAN_MIRROR" >"$ROOT.debootstrap.log" 2>&1 || {
        echo "lambda-image: debootstrap failed; see $ROOT.debootstrap.log" >&2
        tail -n 20 "$ROOT.debootstrap.log" >&2
        exit 1
    }
    # Nothing of apt's caches belongs in the image.
    rm -rf "$ROOT/var/cache/apt/archives/"*.deb "$ROOT/var/lib/apt/lists/"*
fi

echo "lambda-image: awslambdaric and $BOTO3_SPEC into $ROOT/var/runtime"
rm -rf "$ROOT/var/runtime"
"$PIP" install --quiet --disable-pip-version-check --target "$ROOT/var/runtime" --only-binary=:all: \
    --python-version "$PY_VERSION" --implementation cp \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    awslambdaric "$BOTO3_SPEC"

# Lambda's order: function code, then layers (/opt/python...), then the runtime's own packages (boto3), so a
# boto3 bundled in a function or layer wins over the runtime's, as it does in AWS.
cat >"$ROOT/var/runtime/bootstrap" <<EOB
#!/bin/sh
export PYTHONPATH="/var/task:/opt/python/lib/python$PY_VERSION/site-packages:/opt/python:/var/runtime\${PYTHONPATH:+:\$PYTHONPATH}"
export AWS_EXECUTION_ENV="AWS_Lambda_python$PY_VERSION"
cd /var/task
exec /usr/bin/python$PY_VERSION -m awslambdaric "\${_HANDLER:-\$AWS_LAMBDA_FUNCTION_HANDLER}"
EOB
chmod +x "$ROOT/var/runtime/bootstrap"
mkdir -p "$ROOT/var/task" "$ROOT/opt" "$ROOT/var/rapid"

echo "lambda-image: importing $IMAGE"
tar -C "$ROOT" --numeric-owner -c . | docker import \
    --platform linux/amd64 \
    -c 'ENTRYPOINT ["/var/rapid/aws-lambda-rie"]' -c 'WORKDIR /var/task' \
    -c 'ENV LAMBDA_TASK_ROOT=/var/task LAMBDA_RUNTIME_DIR=/var/runtime LANG=C.UTF-8 TZ=:UTC' \
    - "$IMAGE" >/dev/null
# A smoke check: the interpreter and awslambdaric import inside the image.
docker run --rm --network none --entrypoint /usr/bin/python$PY_VERSION "$IMAGE" \
    -c "import sys; sys.path.append('/var/runtime'); import awslambdaric, boto3; print('python', sys.version.split()[0], 'awslambdaric', awslambdaric.__version__, 'boto3', boto3.__version__)"
echo "lambda-image: built $IMAGE in $(($(date +%s) - started))s"
