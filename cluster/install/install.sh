#!/bin/sh
# k3py installer for machines that already run Linux (Debian 12/13, Raspberry Pi OS, Ubuntu),
# shaped like K3s's get.k3s.io script. A k3py server serves it at /static/install.sh:
#
#   curl -sfL --cacert ca.crt https://SERVER:6443/static/install.sh \
#     | K3PY_URL=https://SERVER:6443 K3PY_TOKEN=K10... sh -          # an agent joins
#   curl -sfL http://MIRROR/install.sh | sh -      # the first server, from `make dist MIRROR=…`
#   sh install.sh   with INSTALL_K3PY_ARTIFACT=k3py-<version>-py3-none-any.whl   # air-gapped
#
# Environment:
#   K3PY_URL                  the server to join: installs an agent (else a server)
#   K3PY_TOKEN, K3PY_TOKEN_FILE  the join token; its CA hash pins the server before anything
#                             downloaded from it is trusted
#   INSTALL_K3PY_EXEC         flags for `k3py server` / `k3py agent` (may start with the command)
#   INSTALL_K3PY_ARTIFACT     a k3py wheel, a local file or an https:// URL (air-gapped hosts)
#   INSTALL_K3PY_MIRROR       where `make dist`'s files are served (default: the MIRROR the
#                             copy of this script was made for, see DIST_URL below)
#   INSTALL_K3PY_VERSION      the version to fetch from the server or the mirror
#   INSTALL_K3PY_SKIP_START   true: write and enable the unit, do not start it
#   INSTALL_K3PY_SKIP_ENABLE  true: neither enable nor start the unit
#   INSTALL_K3PY_BIN_DIR, INSTALL_K3PY_SYSTEMD_DIR, INSTALL_K3PY_LIB_DIR   where files go
# Every other K3PY_* variable is written to the unit's environment file (mode 0600), where
# k3py reads it as the flag of the same name (K3PY_NODE_IP is --node-ip).
#
# Dependencies come from the distribution (python3-aiohttp and the rest, docker.io when no
# Docker engine answers); the installer names in one line what it cannot satisfy and then
# changes nothing. Every file it writes is listed in $LIB_DIR/files; the uninstall script
# removes exactly those, and what the running cluster created.
set -e
umask 022

info() { echo "[INFO]  $*"; }
fatal() {
    echo "[ERROR] $*" >&2
    exit 1
}

BIN_DIR=${INSTALL_K3PY_BIN_DIR:-/usr/local/bin}
SYSTEMD_DIR=${INSTALL_K3PY_SYSTEMD_DIR:-/etc/systemd/system}
LIB_DIR=${INSTALL_K3PY_LIB_DIR:-/usr/lib/k3py}
DATA_DIR=/var/lib/k3py
MIN_PYTHON=3.11
# The board's dependencies (pyproject's base list) as Debian packages: module=package.
PY_DEPS="aiohttp=python3-aiohttp cryptography=python3-cryptography yaml=python3-yaml
docker=python3-docker dnslib=python3-dnslib pyroute2=python3-pyroute2
prometheus_client=python3-prometheus-client"

# `make dist` writes the wheel's name and sha256 (and with MIRROR=URL, the mirror's URL) into
# the copy of this script it puts beside the wheel: served by a fleet's mirror, the script
# knows which wheel to fetch from there and checks it.
DIST_URL=${INSTALL_K3PY_MIRROR:-}
DIST_WHEEL=
DIST_SHA256=

# --- what to install -----------------------------------------------------------------------
set -f # the flags are split into words, never globbed
set -- ${INSTALL_K3PY_EXEC:-}
set +f
case "${1:-}" in
    server | agent)
        CMD=$1
        shift
        ;;
    *) if [ -n "${K3PY_URL:-}" ]; then CMD=agent; else CMD=server; fi ;;
esac
if [ "$CMD" = agent ]; then
    NAME=k3py-agent
else
    NAME=k3py
fi
UNIT=$SYSTEMD_DIR/$NAME.service
ENV_FILE=$SYSTEMD_DIR/$NAME.service.env
UNINSTALL=$BIN_DIR/$NAME-uninstall.sh
KILLALL=$BIN_DIR/k3py-killall.sh
MANIFEST=$LIB_DIR/files

# --- refusals: nothing is written before all of these passed --------------------------------
[ "$(id -u)" = 0 ] || fatal "run the installer as root (sudo sh -)"
ARCH=$(uname -m)
case "$ARCH" in
    x86_64 | amd64) ARCH=amd64 ;;
    aarch64 | arm64) ARCH=arm64 ;;
    armv7l | armv8l) ARCH=arm ;;
    *) fatal "unsupported architecture $ARCH: k3py runs on amd64, arm64 and armv7 (armhf)" ;;
esac
command -v python3 >/dev/null 2>&1 || fatal "no python3: k3py needs Python $MIN_PYTHON or newer"
PY_VERSION=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) ||
    fatal "python3 does not run"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null ||
    fatal "python3 is $PY_VERSION: k3py needs Python $MIN_PYTHON or newer"
PYTHON=$(command -v python3)
command -v systemctl >/dev/null 2>&1 || fatal "no systemctl: the installer writes systemd units"

if [ -n "${K3PY_TOKEN_FILE:-}" ] && [ -z "${K3PY_TOKEN:-}" ]; then
    [ -r "$K3PY_TOKEN_FILE" ] || fatal "cannot read K3PY_TOKEN_FILE $K3PY_TOKEN_FILE"
    TOKEN=$(tr -d ' \r\n' <"$K3PY_TOKEN_FILE")
else
    TOKEN=${K3PY_TOKEN:-}
fi
if [ "$CMD" = agent ]; then
    [ -n "${K3PY_URL:-}" ] || fatal "an agent needs K3PY_URL (https://SERVER:6443)"
    [ -n "$TOKEN" ] || fatal "an agent needs K3PY_TOKEN or K3PY_TOKEN_FILE (the server's token)"
fi

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

if [ -n "${INSTALL_K3PY_ARTIFACT:-}" ]; then
    case "$INSTALL_K3PY_ARTIFACT" in
        https://*)
            # Verified by the system's CA certificates, as K3s's downloads are.
            command -v curl >/dev/null 2>&1 || fatal "no curl to download $INSTALL_K3PY_ARTIFACT"
            curl -sfL "$INSTALL_K3PY_ARTIFACT" -o "$TMP/k3py.whl" ||
                fatal "cannot download $INSTALL_K3PY_ARTIFACT"
            ;;
        *)
            [ -f "$INSTALL_K3PY_ARTIFACT" ] ||
                fatal "INSTALL_K3PY_ARTIFACT $INSTALL_K3PY_ARTIFACT is not a file (or an https:// URL)"
            cp "$INSTALL_K3PY_ARTIFACT" "$TMP/k3py.whl"
            ;;
    esac
elif [ -n "${K3PY_URL:-}" ]; then
    command -v curl >/dev/null 2>&1 || fatal "no curl: install curl, or set INSTALL_K3PY_ARTIFACT"
    [ -n "$TOKEN" ] || fatal "K3PY_TOKEN is needed to download k3py from $K3PY_URL"
    URL=${K3PY_URL%/}
    # The token K10<sha256 of the CA bundle>::user:secret pins the server: the CA is fetched
    # without trust and accepted only when its hash is the token's.
    case "$TOKEN" in
        K10*::*) WANT=${TOKEN#K10} && WANT=${WANT%%::*} ;;
        *) fatal "K3PY_TOKEN has no CA hash: use the full token (K10...) from the server's $DATA_DIR/server/token" ;;
    esac
    curl -sfk "$URL/cacerts" -o "$TMP/ca.crt" || fatal "cannot fetch $URL/cacerts"
    GOT=$(sha256sum "$TMP/ca.crt" | cut -d' ' -f1)
    [ "$GOT" = "$WANT" ] ||
        fatal "the CA of $URL does not match the token's hash ($GOT, token says $WANT): nothing installed"
    WHEEL=k3py.whl
    [ -n "${INSTALL_K3PY_VERSION:-}" ] && WHEEL="k3py-${INSTALL_K3PY_VERSION#v}-py3-none-any.whl"
    curl -sf --cacert "$TMP/ca.crt" -H "Authorization: Bearer $TOKEN" "$URL/static/$WHEEL" \
        -o "$TMP/k3py.whl" || fatal "cannot download $URL/static/$WHEEL with the token (is it the cluster's token, and does the server run that version?)"
elif [ -n "$DIST_URL" ]; then
    command -v curl >/dev/null 2>&1 || fatal "no curl: install curl, or set INSTALL_K3PY_ARTIFACT"
    WHEEL=$DIST_WHEEL
    [ -n "${INSTALL_K3PY_VERSION:-}" ] && WHEEL="k3py-${INSTALL_K3PY_VERSION#v}-py3-none-any.whl"
    [ -n "$WHEEL" ] || fatal "INSTALL_K3PY_VERSION is needed to choose a wheel at $DIST_URL"
    curl -sfL "${DIST_URL%/}/$WHEEL" -o "$TMP/k3py.whl" ||
        fatal "cannot download ${DIST_URL%/}/$WHEEL"
    if [ "$WHEEL" = "$DIST_WHEEL" ] && [ -n "$DIST_SHA256" ]; then
        GOT=$(sha256sum "$TMP/k3py.whl" | cut -d' ' -f1)
        [ "$GOT" = "$DIST_SHA256" ] ||
            fatal "${DIST_URL%/}/$WHEEL has sha256 $GOT, this installer was made for $DIST_SHA256: nothing installed"
    fi
else
    fatal "nothing to install from: set K3PY_URL (an agent), INSTALL_K3PY_MIRROR or INSTALL_K3PY_ARTIFACT (a k3py wheel)"
fi

# The wheel's name is in its dist-info.
VERSION=$(python3 - "$TMP/k3py.whl" <<'EOF'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
info = [n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA") and n.startswith("k3py-")]
print(info[0][len("k3py-"):-len(".dist-info")] if info else "")
EOF
) || VERSION=
[ -n "$VERSION" ] || fatal "the downloaded file is not a k3py wheel"

# --- dependencies: all or nothing ----------------------------------------------------------
MISSING=
for dep in $PY_DEPS; do
    python3 -c "import ${dep%%=*}" 2>/dev/null || MISSING="$MISSING ${dep#*=}"
done
RUNTIME=docker
case " $* ${K3PY_RUNTIME:-} " in
    *" --runtime fake "* | *" --runtime=fake "* | *" fake "*) RUNTIME=fake ;;
esac
# k3py speaks to the engine's socket; the docker command is only for the killall script.
engine_answers() {
    docker info >/dev/null 2>&1 ||
        curl -sf --unix-socket /var/run/docker.sock http://docker/_ping >/dev/null 2>&1
}
if [ "$RUNTIME" = docker ] && ! engine_answers; then
    command -v dockerd >/dev/null 2>&1 || MISSING="$MISSING docker.io"
fi
# Debian 13 ships the docker command apart (docker-cli, a recommendation of docker.io).
if [ "$RUNTIME" = docker ] && ! command -v docker >/dev/null 2>&1 &&
    apt-cache show docker-cli >/dev/null 2>&1; then
    MISSING="$MISSING docker-cli"
fi
INSTALLED_PACKAGES=
if [ -n "$MISSING" ]; then
    command -v apt-get >/dev/null 2>&1 ||
        fatal "cannot satisfy:$MISSING (no apt-get here; install them and run again)"
    if ! apt-get install -s -y --no-install-recommends $MISSING >/dev/null 2>&1; then
        apt-get update -q >/dev/null 2>&1 || true
        apt-get install -s -y --no-install-recommends $MISSING >/dev/null 2>&1 ||
            fatal "cannot satisfy:$MISSING (not installable from this system's package sources)"
    fi
    info "installing from the distribution:$MISSING"
    DEBIAN_FRONTEND=noninteractive apt-get install -q -y --no-install-recommends $MISSING >/dev/null ||
        fatal "apt-get install$MISSING failed"
    INSTALLED_PACKAGES=$MISSING
fi
if [ "$RUNTIME" = docker ] && ! engine_answers; then
    systemctl enable --now docker >/dev/null 2>&1 || true
fi
# The pods' network, whose accept rules the agent adds to Docker's DOCKER-USER chain.
CLUSTER_CIDR=${K3PY_CLUSTER_CIDR:-10.42.0.0/16}
NEXT=
for arg in "$@"; do
    [ -n "$NEXT" ] && CLUSTER_CIDR=$arg && NEXT=
    case "$arg" in
        --cluster-cidr=*) CLUSTER_CIDR=${arg#--cluster-cidr=} ;;
        --cluster-cidr) NEXT=1 ;;
    esac
done

# --- files -------------------------------------------------------------------------------
# A reinstall replaces the previous installation's files (its list is reused).
[ -f "$MANIFEST" ] && cp "$MANIFEST" "$TMP/previous" || : >"$TMP/previous"
: >"$TMP/files"
record() { echo "$1" >>"$TMP/files"; }
newdir() {
    # Directories the installer makes are listed (deepest last) so uninstall removes them.
    if [ ! -d "$1" ]; then
        newdir "$(dirname "$1")"
        mkdir "$1"
        record "$1/"
    fi
}
grep '/$' "$TMP/previous" >>"$TMP/files" || true

newdir "$LIB_DIR"
newdir "$BIN_DIR"
newdir "$SYSTEMD_DIR"
rm -rf "$LIB_DIR/lib.new"
mkdir "$LIB_DIR/lib.new"
python3 -m zipfile -e "$TMP/k3py.whl" "$LIB_DIR/lib.new"
rm -rf "$LIB_DIR/lib"
mv "$LIB_DIR/lib.new" "$LIB_DIR/lib"
record "$LIB_DIR/lib"
# The wheel is kept: a server serves it to the machines that join it.
rm -f "$LIB_DIR"/k3py-*-py3-none-any.whl
cp "$TMP/k3py.whl" "$LIB_DIR/k3py-$VERSION-py3-none-any.whl"
record "$LIB_DIR/k3py-$VERSION-py3-none-any.whl"
[ -n "$INSTALLED_PACKAGES" ] && echo "$INSTALLED_PACKAGES" >"$LIB_DIR/packages" &&
    record "$LIB_DIR/packages"

cat >"$BIN_DIR/k3py" <<EOF
#!/bin/sh
# k3py $VERSION, installed by install.sh; the distribution's python3 and its packages.
PYTHONPATH=$LIB_DIR/lib\${PYTHONPATH:+:\$PYTHONPATH} exec $PYTHON -m k3py "\$@"
EOF
chmod 755 "$BIN_DIR/k3py"
record "$BIN_DIR/k3py"

cat >"$KILLALL" <<EOF
#!/bin/sh
# Stops k3py and its pods' containers, and removes its network devices and rules.
[ "\$(id -u)" = 0 ] || exec sudo "\$0" "\$@"
for unit in k3py k3py-agent; do
    systemctl stop "\$unit" 2>/dev/null || true
done
if command -v docker >/dev/null 2>&1; then
    ids=\$(docker ps -aq --filter label=io.k3py.managed 2>/dev/null)
    [ -n "\$ids" ] && docker rm -f \$ids >/dev/null
fi
for dev in cni0 flannel.1; do
    ip link delete "\$dev" 2>/dev/null || true
done
nft delete table inet k3py 2>/dev/null || true
if command -v iptables >/dev/null 2>&1; then
    for direction in -s -d; do
        while iptables -w -D DOCKER-USER \$direction $CLUSTER_CIDR -j ACCEPT 2>/dev/null; do :; done
    done
fi
exit 0
EOF
chmod 755 "$KILLALL"
record "$KILLALL"

cat >"$UNINSTALL" <<EOF
#!/bin/sh
# Removes what install.sh created (listed in $MANIFEST) and what the cluster created.
set -e
[ "\$(id -u)" = 0 ] || exec sudo "\$0" "\$@"
"$KILLALL"
systemctl disable "$NAME" >/dev/null 2>&1 || true
if [ -f "$LIB_DIR/packages" ]; then
    echo "[INFO]  left installed (other software may use them):\$(cat "$LIB_DIR/packages")"
fi
# The cluster's state: credentials, datastore, kubeconfig.
rm -rf "$DATA_DIR" /etc/k3py /run/k3py
if command -v docker >/dev/null 2>&1; then
    docker image rm k3py/pause:1 >/dev/null 2>&1 || true
fi
# Files first, then the directories the installer made, deepest first.
grep -v '/\$' "$MANIFEST" | while read -r path; do rm -rf "\$path"; done
grep '/\$' "$MANIFEST" | sort -r | while read -r dir; do rmdir "\$dir" 2>/dev/null || true; done
rm -f "$MANIFEST" "\$0"
rmdir "$LIB_DIR" 2>/dev/null || true
systemctl daemon-reload >/dev/null 2>&1 || true
echo "[INFO]  k3py is uninstalled"
EOF
chmod 755 "$UNINSTALL"
record "$UNINSTALL"

# --- the unit ----------------------------------------------------------------------------
: >"$ENV_FILE"
chmod 600 "$ENV_FILE"
# systemd reads the rest of each line as the value.
env | grep -E '^(K3PY_|HTTP_PROXY=|HTTPS_PROXY=|NO_PROXY=)' | grep -v '^K3PY_TOKEN_FILE=' \
    >>"$ENV_FILE" || true
if [ -n "${K3PY_TOKEN_FILE:-}" ] && [ -z "${K3PY_TOKEN:-}" ]; then
    echo "K3PY_TOKEN=$TOKEN" >>"$ENV_FILE"
fi
record "$ENV_FILE"

EXEC_ARGS=
for arg in "$@"; do
    EXEC_ARGS="$EXEC_ARGS \\
    '$(printf '%s' "$arg" | sed "s/'/\\\\'/g")'"
done
if [ "$CMD" = server ]; then
    DESCRIPTION="k3py server: a Kubernetes-compatible cluster's API and control plane"
else
    DESCRIPTION="k3py agent: this node's pods"
fi
cat >"$UNIT" <<EOF
[Unit]
Description=$DESCRIPTION
Wants=network-online.target
After=network-online.target docker.service

[Install]
WantedBy=multi-user.target

[Service]
# Ready once it serves (sd_notify READY=1).
Type=notify
EnvironmentFile=-/etc/default/%N
EnvironmentFile=-$ENV_FILE
# Only k3py itself is stopped: the pods' containers belong to Docker and keep running.
KillMode=process
Delegate=yes
LimitNOFILE=1048576
TasksMax=infinity
TimeoutStartSec=0
Restart=always
RestartSec=5s
ExecStartPre=-/sbin/modprobe br_netfilter
ExecStartPre=-/sbin/modprobe overlay
ExecStart=$BIN_DIR/k3py $CMD$EXEC_ARGS
EOF
record "$UNIT"

sort -u "$TMP/files" >"$MANIFEST"
info "installed k3py $VERSION ($CMD); files listed in $MANIFEST"

[ "${INSTALL_K3PY_SKIP_ENABLE:-}" = true ] && exit 0
systemctl daemon-reload
systemctl enable "$NAME" >/dev/null 2>&1
[ "${INSTALL_K3PY_SKIP_START:-}" = true ] && exit 0
info "starting $NAME.service"
systemctl restart "$NAME"
info "$NAME.service is active"
