# shellcheck shell=bash
# shellcheck disable=SC2016  # wait_until descriptions are expanded late, on purpose
# The smoke story, shared by scripts/smoke.sh (processes) and scripts/smoke-images.sh
# (containers). Sourced, not run. The driver defines the mode hooks:
#   mode_start_registry ARGS...      start the registry (addresses as ARGS)
#   mode_registry_log                print the registry's log so far
#   mode_start_server N ARGS...      start server N
#   mode_server_log N                print server N's log so far
#   mode_signal NAME SIGNAL          NAME is "registry" or a server number
#   mode_exit_code NAME SECONDS      wait (bounded) for NAME to exit; sets EXIT_CODE
#   mode_cleanup                     stop and remove everything it started (idempotent)
#   mode_extra_checks                optional: checks only this mode can make
# Everything here talks to 127.0.0.1 only, and every wait is bounded.

SMOKE_T0=$(date +%s%3N)
SMOKE_CHECKS=0
SMOKE_WORK=$(mktemp -d "${TMPDIR:-/tmp}/dps-smoke.XXXXXX")
SMOKE_FAILED=""
SERVERS=(1 2 3)
declare -A SERVER_PORT=()

elapsed() { local t; t=$(( $(date +%s%3N) - SMOKE_T0 )); printf '%d.%03ds' $((t / 1000)) $((t % 1000)); }
say() { printf '[%s %9s] %s\n' "$SMOKE_NAME" "$(elapsed)" "$*"; }
ok() { SMOKE_CHECKS=$((SMOKE_CHECKS + 1)); say "ok: $*"; }

dump_logs() {
    echo "----- registry log (last 30 lines)" >&2
    mode_registry_log 2>&1 | tail -n 30 >&2 || true
    local n
    for n in "${SERVERS[@]}"; do
        echo "----- server smoke-$n log (last 15 lines)" >&2
        mode_server_log "$n" 2>&1 | tail -n 15 >&2 || true
    done
}

fail() {
    SMOKE_FAILED=1
    exec 1>&3 2>&4
    echo >&2
    echo "[$SMOKE_NAME $(elapsed)] FAIL: $*" >&2
    dump_logs
    exit 1
}

on_exit() {
    local rc=$?
    trap - EXIT INT TERM
    exec 1>&3 2>&4  # the original outputs, even if the exit came inside a redirection
    say "cleaning up"
    mode_cleanup >/dev/null 2>&1 || true
    rm -rf "$SMOKE_WORK"
    if (( rc == 0 )) && [[ -z $SMOKE_FAILED ]]; then
        say "PASS: the whole story held"
        echo "$SMOKE_NAME: $SMOKE_CHECKS passed, 0 failed"
    else
        echo "$SMOKE_NAME: FAILED (exit $rc) after $SMOKE_CHECKS checks passed" >&2
        echo "$SMOKE_NAME: $SMOKE_CHECKS passed, 1 failed"
        (( rc == 0 )) && rc=1
    fi
    exit "$rc"
}

smoke_traps() {
    exec 3>&1 4>&2
    trap on_exit EXIT
    trap 'SMOKE_FAILED=1; echo >&4; echo "[$SMOKE_NAME $(elapsed)] interrupted" >&4; exit 130' INT TERM
}

need() {
    local c
    for c in "$@"; do
        command -v "$c" >/dev/null 2>&1 || fail "'$c' is needed and not installed"
    done
}

# wait_until SECONDS DESCRIPTION COMMAND...: polls COMMAND every 0.1s until it succeeds.
# DESCRIPTION is expanded only on a timeout, so it may hold '$(status_of NAME)' in single
# quotes to say what the state was then.
wait_until() {
    local seconds=$1 what=$2; shift 2
    local deadline=$(( $(date +%s%3N) + seconds * 1000 ))
    while :; do
        "$@" >/dev/null 2>&1 && return 0
        if (( $(date +%s%3N) >= deadline )); then
            what=$(eval "echo \"$what\"" 2>/dev/null) || true
            fail "timed out after ${seconds}s waiting for $what"
        fi
        sleep 0.1
    done
}

# http METHOD URL [BODY]: prints "CODE" on the first line and the body after it.
http() {
    local method=$1 url=$2 body=${3:-}
    local args=(-s -S --max-time 3 -o "$SMOKE_WORK/body" -w '%{http_code}' -X "$method")
    [[ -n $body ]] && args+=(-H 'Content-Type: application/json' --data "$body")
    local code
    code=$(curl "${args[@]}" "$url" 2>"$SMOKE_WORK/curl.err") || code="000"
    echo "$code"
    cat "$SMOKE_WORK/body" 2>/dev/null || true
}

# json_eval PYTHON-EXPR: evaluates EXPR with `d` bound to the JSON on stdin.
json_eval() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

# status_of NAME: the endpoint's Status, "absent" on 404, "error" otherwise.
status_of() {
    local out code
    out=$(http GET "http://$API/endpoints/$1")
    code=${out%%$'\n'*}
    case $code in
        200) tail -n +2 <<<"$out" | json_eval 'd["Status"]' 2>/dev/null || echo error ;;
        404) echo absent ;;
        *) echo error ;;
    esac
}
status_is() { [[ $(status_of "$1") == "$2" ]]; }

# names_with_status STATUS: sorted names from GET /endpoints?status=STATUS, comma-separated.
names_with_status() {
    curl -s --max-time 3 "http://$API/endpoints?status=$1" |
        json_eval '",".join(sorted(e["Name"] for e in d))'
}
passing_are() { [[ $(names_with_status passing) == "$1" ]]; }

# log_addr LABEL TEXT: "API listening on 127.0.0.1:N" -> 127.0.0.1:N (last match).
log_addr() { grep -oE "$1 [0-9.]+:[0-9]+" | tail -n 1 | awk '{print $NF}'; }
# Both set the addresses they find: wait_until runs them in this shell.
registry_listening() {
    local log
    log=$(mode_registry_log 2>&1)
    API=$(log_addr "API listening on" <<<"$log")
    UI=$(log_addr "UI listening on" <<<"$log")
    [[ -n $API && -n $UI ]]
}
server_listening() {
    local port
    port=$(mode_server_log "$1" 2>&1 | log_addr "Listening on" | cut -d: -f2)
    [[ -n $port ]] || return 1
    SERVER_PORT[$1]=$port
}

expect_code() { # expect_code WANT METHOD URL [BODY]
    local want=$1; shift
    local got
    got=$(http "$@" | head -n 1)
    [[ $got == "$want" ]] || fail "$1 $2 answered $got, expected $want"
}

run_story() {
    # 1. The registry, on kernel-chosen loopback ports, with fast health checks.
    say "starting the registry (API and UI on 127.0.0.1:0, checks every 200ms, critical endpoints removed after 1s, 2s warm-up)"
    mode_start_registry -api=127.0.0.1:0 -http=127.0.0.1:0 -check-interval=200ms \
        -check-timeout=500ms -deregister-critical-after=1s -warm-up=2s
    wait_until 10 "the registry's 'API listening on' and 'UI listening on' log lines" registry_listening
    ok "registry API on $API, UI on $UI"
    expect_code 200 GET "http://$API/healthz"
    expect_code 200 GET "http://$UI/healthz"
    [[ $(curl -s --max-time 3 "http://$API/endpoints" | json_eval 'len(d)') == 0 ]] ||
        fail "a fresh registry's GET /endpoints is not an empty array"
    ok "GET /healthz answers 200 on both listeners; /endpoints is []"

    # 2. Three servers on kernel-chosen ports, registering 127.0.0.1:PORT.
    local n
    for n in "${SERVERS[@]}"; do
        say "starting server smoke-$n"
        mode_start_server "$n" -service-registry="$API" -advertised-ip=127.0.0.1 \
            -register-interval=1s -service-instance-name="smoke-$n"
    done
    for n in "${SERVERS[@]}"; do
        wait_until 10 "server smoke-$n's 'Listening on' log line" server_listening "$n"
        expect_code 200 GET "http://127.0.0.1:${SERVER_PORT[$n]}/healthz"
        grep -q "smoke-$n" <<<"$(http GET "http://127.0.0.1:${SERVER_PORT[$n]}/")" ||
            fail "server smoke-$n's page does not show its instance name"
        ok "server smoke-$n listens on port ${SERVER_PORT[$n]}; /healthz 200, its page names it"
    done
    grep -qF "Registering advertised endpoint [127.0.0.1:${SERVER_PORT[1]}]" <<<"$(mode_server_log 1 2>&1)" ||
        fail "server smoke-1 did not log 'Registering advertised endpoint [127.0.0.1:${SERVER_PORT[1]}]'"
    ok "server smoke-1 logged 'Registering advertised endpoint [127.0.0.1:${SERVER_PORT[1]}]'"

    say "waiting for all three to be passing in GET /endpoints?status=passing"
    wait_until 15 'smoke-1,smoke-2,smoke-3 all passing (passing then: $(names_with_status passing))' \
        passing_are "smoke-1,smoke-2,smoke-3"
    ok "all three passing after $(elapsed)"
    local addr
    addr=$(curl -s --max-time 3 "http://$API/endpoints/smoke-1" | json_eval 'd["Address"]')
    [[ $addr == "127.0.0.1:${SERVER_PORT[1]}" ]] || fail "smoke-1's Address is $addr, expected 127.0.0.1:${SERVER_PORT[1]}"
    [[ $(curl -s --max-time 3 "http://$UI/endpoints" | json_eval '",".join(e["Name"] for e in d)') == "smoke-1,smoke-2,smoke-3" ]] ||
        fail "the UI listener's GET /endpoints does not list the three servers in name order"
    ok "smoke-1 registered as 127.0.0.1:${SERVER_PORT[1]}; the UI's JSON lists all three, sorted"
    local code
    code=$(http POST "http://$UI/register" '{"Name":"intruder","Address":"127.0.0.1:9"}' | head -n 1)
    [[ $code != 2* ]] || fail "the UI listener accepted a write (POST /register answered $code)"
    [[ $(status_of intruder) == absent ]] || fail "a write through the UI listener registered an endpoint"
    ok "the UI listener refuses writes (POST /register: $code)"

    mode_extra_checks

    # 3. SIGKILL: no deregistration; the health checks must find it, mark it critical, drop it.
    say "killing smoke-1 with SIGKILL: it should turn critical, then be removed"
    local t0
    t0=$(date +%s%3N)
    mode_signal 1 KILL
    wait_until 10 'smoke-1 to turn critical (it was $(status_of smoke-1))' status_is smoke-1 critical
    ok "smoke-1 critical $(( $(date +%s%3N) - t0 ))ms after SIGKILL"
    wait_until 10 'smoke-1 to be removed after 1s critical (it was $(status_of smoke-1))' status_is smoke-1 absent
    ok "smoke-1 removed $(( $(date +%s%3N) - t0 ))ms after SIGKILL"

    # 4. SIGTERM: the server deregisters itself, so it leaves at once, well before a health
    #    check could remove it (2 failures at 200ms + 1s critical = 1.4s at the earliest).
    say "stopping smoke-2 with SIGTERM: it should deregister and leave at once"
    t0=$(date +%s%3N)
    mode_signal 2 TERM
    wait_until 3 'smoke-2 to leave after SIGTERM (it was $(status_of smoke-2))' status_is smoke-2 absent
    local took=$(( $(date +%s%3N) - t0 ))
    (( took <= 1000 )) || fail "smoke-2 left ${took}ms after SIGTERM: too slow to be its own deregistration"
    ok "smoke-2 left ${took}ms after SIGTERM"
    local rc
    mode_exit_code 2 5; rc=$EXIT_CODE
    [[ $rc == 0 ]] || fail "smoke-2 exited with '$rc' after SIGTERM, expected 0"
    ok "smoke-2 exited 0"

    # 5. The page lists the survivor and neither of the others.
    local page
    page=$(http GET "http://$UI/")
    [[ ${page%%$'\n'*} == 200 ]] || fail "GET / on the UI answered ${page%%$'\n'*}"
    grep -q "smoke-3" <<<"$page" || fail "the UI page does not list the survivor smoke-3"
    ! grep -qE "smoke-[12]([^0-9]|$)" <<<"$page" || fail "the UI page still lists smoke-1 or smoke-2"
    grep -qi "passing" <<<"$page" || fail "the UI page does not show the survivor's status"
    passing_are "smoke-3" || fail "GET /endpoints?status=passing is not just smoke-3"
    ok "the page on $UI lists smoke-3 (passing) and not the two that left"

    # 6. Stop everything cleanly.
    say "stopping smoke-3 and the registry with SIGTERM"
    mode_signal 3 TERM
    wait_until 3 "smoke-3 to leave after SIGTERM" status_is smoke-3 absent
    mode_exit_code 3 5; rc=$EXIT_CODE
    [[ $rc == 0 ]] || fail "smoke-3 exited with '$rc' after SIGTERM, expected 0"
    mode_signal registry TERM
    mode_exit_code registry 5; rc=$EXIT_CODE
    [[ $rc == 0 ]] || fail "the registry exited with '$rc' after SIGTERM, expected 0"
    ok "smoke-3 deregistered and exited 0; the registry exited 0"
}
