#!/usr/bin/env bash
# Benchmarks one cniscope-cni ADD against the alternatives, in the same run (round-robin, by the
# bench_add example driver, no shell between the timer and the process):
#   - cniscope-cni with no commands (pass-through + tag),
#   - a shell+jq pass-through plugin doing what CNI-passthrough does on ADD (log env and stdin to
#     the logFile named in the config, print prevResult),
#   - a no-op static binary that reads stdin and exits (the floor: exec + read),
#   - cniscope-cni running 1 and 4 read-only ip commands (cost per executed command).
# Run as root from the repository root: bash cni-plugin/bench/add.sh [runs]
# Needs: jq, gcc (static libc), iproute2, containernetworking-plugins.
set -euo pipefail
RUNS=${1:-200}
cargo build --release -q -p cniscope-cni
BIN=$PWD/target/release/cniscope-cni
W=$(mktemp -d /tmp/cniscope-bench.XXXXXX)
NS=csbench$$
BR=csbbr$$
cleanup() {
	ip netns del "$NS" 2>/dev/null || true
	ip link del "$BR" 2>/dev/null || true
	rm -rf "$W"
}
trap cleanup EXIT
ip netns add "$NS"
export CNI_COMMAND=ADD CNI_CONTAINERID=bench CNI_NETNS=/run/netns/$NS CNI_IFNAME=eth0 CNI_PATH=/usr/lib/cni
jq -n --arg br "$BR" --arg d "$W/ipam" \
	'{cniVersion:"1.0.0",name:"bench",type:"bridge",bridge:$br,ipam:{type:"host-local",subnet:"10.255.250.0/24",dataDir:$d}}' \
	>"$W/bridge.json"
/usr/lib/cni/bridge <"$W/bridge.json" >"$W/prev.json"

conf() { # conf FILE COMMANDS-JSON
	jq -n --slurpfile prev "$W/prev.json" --arg tags "$W/tags" --arg log "$W/passthrough.log" --argjson cmds "$2" \
		'{cniVersion:"1.0.0",name:"bench",type:"cniscope-cni",tagDir:$tags,logFile:$log,commands:$cmds,prevResult:$prev[0]}' \
		| jq 'if .commands == [] then del(.commands) else . end' | jq 'del(.logFile)' >"$1"
}
conf "$W/add0.json" '[]'
conf "$W/add1.json" '["ip route"]'
conf "$W/add4.json" '["ip route","ip addr","ip link","ip neigh"]'
jq --arg log "$W/passthrough.log" '. + {logFile:$log}' "$W/add0.json" >"$W/passthrough.json"

cat >"$W/passthrough.sh" <<'SH'
#!/bin/bash
# CNI-passthrough's ADD, reduced to its essentials: log env and stdin, print prevResult.
input=$(cat)
log=$(echo "$input" | jq -r '.logFile // empty')
if [ -n "$log" ]; then
	{ env | grep '^CNI_'; echo "$input"; } >>"$log"
fi
echo "$input" | jq '.prevResult'
SH
chmod +x "$W/passthrough.sh"
printf '#include <unistd.h>\nint main(void){char b[65536];while(read(0,b,sizeof b)>0);return 0;}\n' >"$W/noop.c"
gcc -O2 -static -o "$W/noop" "$W/noop.c"

# Sanity: each variant succeeds and the plugins print prevResult.
"$BIN" <"$W/add0.json" | jq -e --slurpfile p "$W/prev.json" '. == $p[0]' >/dev/null
"$W/passthrough.sh" <"$W/passthrough.json" | jq -e --slurpfile p "$W/prev.json" '. == $p[0]' >/dev/null
"$BIN" <"$W/add4.json" >/dev/null

cargo build --release -q -p cniscope-cni --example bench_add
"$PWD/target/release/examples/bench_add" "$RUNS" \
	"cniscope-cni ADD, no commands|$BIN|$W/add0.json" \
	"shell+jq passthrough ADD|$W/passthrough.sh|$W/passthrough.json" \
	"no-op static binary|$W/noop|$W/add0.json" \
	"bare \`ip -n NS route\` (no plugin)|/usr/sbin/ip -n $NS route|/dev/null" \
	"cniscope-cni ADD, 1 command (ip route)|$BIN|$W/add1.json" \
	"cniscope-cni ADD, 4 commands (route, addr, link, neigh)|$BIN|$W/add4.json" | tee "$W/table.md"
awk -F'|' 'NR>2 {gsub(/ ms/,"",$3); m[NR-2]=$3} END {
	printf "\nper executed command: %.2f ms (1 command), %.2f ms (average of 4); bare ip in the netns: %.2f ms\n",
		m[5]-m[1], (m[6]-m[1])/4, m[4] }' "$W/table.md"
