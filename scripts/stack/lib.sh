# shellcheck shell=bash
# Shared helpers of the local stack scripts: paths, messages, ports, processes and readiness checks.
# Sourced by scripts/stack/stack.sh; nothing here starts a server by itself.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STACK_DIR="${MILLRACE_STACK_DIR:-$REPO_ROOT/.stack}"
VENV_DIR="${MILLRACE_VENV:-$REPO_ROOT/.venv}"
STACK_TIMEOUT="${MILLRACE_STACK_TIMEOUT:-60}"
STACK_HOST=127.0.0.1

say() { printf 'stack: %s\n' "$*" >&2; }
die() {
    printf 'stack: error: %s\n' "$*" >&2
    exit 1
}

# Runs a command as root: directly when we are root, through sudo otherwise.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root to run '$*' (no sudo on this machine)"
    fi
}

# Installs Debian packages that are not installed yet. Idempotent; a missing package is named clearly.
apt_ensure() {
    local missing=() pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! as_root apt-get install -y --no-install-recommends "${missing[@]}" >"$STACK_DIR/apt.log" 2>&1; then
        as_root apt-get update -q >>"$STACK_DIR/apt.log" 2>&1 || true
        if ! as_root apt-get install -y --no-install-recommends "${missing[@]}" >>"$STACK_DIR/apt.log" 2>&1; then
            tail -n 15 "$STACK_DIR/apt.log" >&2
            die "could not install Debian packages ${missing[*]} (is the Debian registry reachable? see $STACK_DIR/apt.log)"
        fi
    fi
}

# Project-local virtualenv with the Python-packaged servers and tools, pinned in requirements.txt.
venv_ensure() {
    local req="$REPO_ROOT/scripts/stack/requirements.txt" stamp="$VENV_DIR/.millrace-requirements"
    if [ -x "$VENV_DIR/bin/python" ] && [ -f "$stamp" ] && cmp -s "$req" "$stamp"; then
        return 0
    fi
    [ -x "$VENV_DIR/bin/python" ] || python3 -m venv "$VENV_DIR" || die "python3 -m venv failed (install python3-venv)"
    say "installing Python packages into $VENV_DIR"
    if ! "$VENV_DIR/bin/pip" install -q --disable-pip-version-check -r "$req" >"$STACK_DIR/pip.log" 2>&1; then
        tail -n 15 "$STACK_DIR/pip.log" >&2
        die "could not install Python packages from $req (is PyPI reachable? see $STACK_DIR/pip.log)"
    fi
    cp "$req" "$stamp"
}

venv_site() { "$VENV_DIR/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }

# True when something accepts TCP connections on the port.
port_open() { (exec 3<>"/dev/tcp/$STACK_HOST/$1") 2>/dev/null; }

# Refuses to start when a port is already taken by a process we did not start.
port_free_or_die() {
    local name=$1 port=$2 var=$3
    if port_open "$port"; then
        local who
        who=$(ss -ltnpH "sport = :$port" 2>/dev/null | sed -n 's/.*users:((\("[^"]*"\).*/\1/p' | head -n1)
        die "$name: port $STACK_HOST:$port is already taken${who:+ by $who}; stop it or choose another port with $var=<port>"
    fi
}

pid_alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
pid_of() { cat "$STACK_DIR/$1.pid" 2>/dev/null || true; }
addr_of() { cat "$STACK_DIR/$1.addr" 2>/dev/null || true; }

# Starts a command detached from this shell, logging to the server's log, and records its PID.
spawn() {
    local name=$1
    shift
    local log="$STACK_DIR/$name.log"
    : >"$log"
    setsid nohup "$@" >>"$log" 2>&1 </dev/null &
    echo $! >"$STACK_DIR/$name.pid"
}

# Waits until probe succeeds; on timeout or early exit, shows the tail of the log and stops the server.
wait_ready() {
    local name=$1 probe=$2 deadline=$((SECONDS + STACK_TIMEOUT)) pid
    pid=$(pid_of "$name")
    while [ $SECONDS -lt $deadline ]; do
        if ! pid_alive "$pid"; then
            say "$name exited during start-up; last lines of $STACK_DIR/$name.log:"
            tail -n 20 "$STACK_DIR/$name.log" >&2
            rm -f "$STACK_DIR/$name.pid" "$STACK_DIR/$name.addr"
            die "$name did not start"
        fi
        if eval "$probe" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.2
    done
    say "$name did not become ready within ${STACK_TIMEOUT}s; last lines of $STACK_DIR/$name.log:"
    tail -n 20 "$STACK_DIR/$name.log" >&2
    stop_server "$name"
    die "$name never became ready (raise MILLRACE_STACK_TIMEOUT if the machine is slow)"
}

http_ok() { curl -fsS -o /dev/null --max-time 2 "$1"; }

# Stops a server by its recorded PID (TERM, then KILL after 10 s) and removes its data dir.
stop_server() {
    local name=$1 pid data i
    pid=$(pid_of "$name")
    if pid_alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 1 50); do
            pid_alive "$pid" || break
            sleep 0.2
        done
        if pid_alive "$pid"; then
            say "$name (pid $pid) ignored TERM; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    data=$(cat "$STACK_DIR/$name.data" 2>/dev/null || true)
    case "$data" in
    */millrace-"$name".*) rm -rf "$data" ;;
    esac
    rm -f "$STACK_DIR/$name.pid" "$STACK_DIR/$name.addr" "$STACK_DIR/$name.data"
}

# A fresh data dir for one server, recorded so that stop_server removes it.
new_data_dir() {
    local name=$1 dir
    dir=$(mktemp -d "${TMPDIR:-/tmp}/millrace-$name.XXXXXX")
    echo "$dir" >"$STACK_DIR/$name.data"
    echo "$dir"
}
