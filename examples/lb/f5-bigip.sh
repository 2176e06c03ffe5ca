#!/bin/sh
# A `command` driver hook for an F5 BIG-IP pool member, over iControl REST with curl.
#
#   f5-bigip.sh drain|ready|status
#
# The member is the node: ORCH_LB_NAME (the inventory's lb_name, e.g. "web-01:80") in pool
# $F5_POOL (e.g. ~Common~web_pool) on https://$F5_HOST. The credential comes from $F5_AUTH
# ("user:password", never on the command line); the certificate is verified against $F5_CA.
# Exit codes for the command driver: 0 done, 3 unknown member, 75 try again, other failed.
#
# drain  -> session user-disabled: no new connections, existing and persistent ones continue
#           (use state user-down instead to also refuse persistent ones)
# ready  -> session user-enabled, state user-up
# status -> {"rotation": ..., "healthy": ..., "sessions": ...} from the member and its stats
#
# Not exercised by the test suite (no BIG-IP here); the test suite runs the same contract with
# examples/lb/haproxy-runtime.py against a real HAProxy.
set -u
op=$1
url="https://$F5_HOST/mgmt/tm/ltm/pool/$F5_POOL/members/~Common~$ORCH_LB_NAME"
api() {
    # -w prints the status code last; --fail-with-body is not in every curl, so read it ourselves.
    curl --silent --show-error --cacert "$F5_CA" --user "$F5_AUTH" --max-time 20 \
        -H 'Content-Type: application/json' -w '\n%{http_code}' "$@"
}
check() {
    code=$(printf '%s\n' "$1" | tail -n 1)
    case $code in
        2??) return 0 ;;
        404) exit 3 ;;
        000|429|502|503|504) exit 75 ;;
        *) printf '%s\n' "$1" | head -n 1 >&2; exit 1 ;;
    esac
}
case $op in
    drain) check "$(api -X PATCH -d '{"session":"user-disabled"}' "$url")" ;;
    ready) check "$(api -X PATCH -d '{"session":"user-enabled","state":"user-up"}' "$url")" ;;
    status)
        member=$(api "$url"); check "$member"
        stats=$(api "$url/stats"); check "$stats"
        printf '%s\n%s\n' "$member" "$stats" | python3 -c '
import json, sys
lines = sys.stdin.read().split("\n")
member = json.loads(lines[0])
stats = json.loads(lines[2])
entry = next(iter(stats.get("entries", {}).values()), {}).get("nestedStats", {}).get("entries", {})
sessions = entry.get("serverside.curConns", {}).get("value")
state = member.get("state")
print(json.dumps({
    "rotation": "in" if member.get("session") == "monitor-enabled" else "out",
    "healthy": None if state in (None, "unchecked") else state == "up",
    "sessions": sessions,
}))' ;;
    *) echo "usage: $0 drain|ready|status" >&2; exit 2 ;;
esac
