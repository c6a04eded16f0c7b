#!/bin/sh
# Provisions one node of mesh's Vagrant lab (vagrant/Vagrantfile runs it as root in each VM):
# Docker, mesh's .deb and meshd's settings, then the swarm (node1 creates it, the others join
# with a token fetched from node1) and, on node1, the demo service. Running it again changes
# nothing that is already so.
#
#   provision.sh init|manager|worker ADDR FIRST_ADDR
#
#   ADDR        this node's address on the lab's private network (meshd advertises it)
#   FIRST_ADDR  node1's address there (joining nodes join it; it hands out the tokens)
#
# Environment:
#   MESH_STEPS          the steps to run, of: docker package config swarm demo (default: all).
#                       `cargo xtask test` runs `swarm demo` in the nodes of a netns lab.
#   MESH_DEB            the package (default /tmp/mesh.deb)
#   MESH_LB_BACKEND     meshd's load balancer: ipvs (default), ebpf or auto
#   MESH_LAB_KEY        on joining nodes, the lab's private key, for node1's token
#   MESH_LAB_PUBKEY     on node1, the lab's public key: it may fetch join tokens and nothing else
#   MESH_TOKEN_CMD      a command that prints the join token of the role given as its argument,
#                       instead of SSH to node1 with MESH_LAB_KEY
#   MESH_JOIN_TIMEOUT   seconds a joining node waits for node1's swarm (default 1800: VMs under
#                       software emulation boot slowly)
#   MESH_IMAGE_TAR      the demo image's root file system (default: the box's copy)
#   MESH_DEMO_REPLICAS  the demo service's replicas (default 3)
set -eu

usage() {
	echo "usage: provision.sh init|manager|worker ADDR FIRST_ADDR" >&2
	exit 2
}
[ $# -eq 3 ] || usage
ROLE=$1
ADDR=$2
FIRST=$3
case "$ROLE" in init | manager | worker) ;; *) usage ;; esac

STEPS=${MESH_STEPS:-docker package config swarm demo}
DEB=${MESH_DEB:-/tmp/mesh.deb}
LB_BACKEND=${MESH_LB_BACKEND:-ipvs}
JOIN_TIMEOUT=${MESH_JOIN_TIMEOUT:-1800}
IMAGE=mesh/busybox:latest
SERVICE=demo
PUBLISHED=8080

say() { echo "mesh-provision: $*"; }
fail() {
	echo "mesh-provision: error: $*" >&2
	exit 1
}
step() {
	case " $STEPS " in *" $1 "*) return 0 ;; esac
	return 1
}

# Docker: the box has it; a public box gets it from Debian.
if step docker; then
	if ! command -v dockerd >/dev/null; then
		say "installing docker.io"
		DEBIAN_FRONTEND=noninteractive apt-get -q update
		DEBIAN_FRONTEND=noninteractive apt-get -q install -y docker.io
	fi
	systemctl enable --now docker.service
fi

# The package: installed and started by apt (its unit is enabled on install).
if step package; then
	[ -f "$DEB" ] || fail "$DEB: no such package (vagrant/Vagrantfile uploads target/dist/mesh_*.deb)"
	# Installed again whenever the file differs from the one installed last, even with the same
	# version (a rebuilt package while developing).
	sum=$(sha256sum "$DEB" | cut -d' ' -f1)
	if [ "$(cat /var/lib/mesh-lab/deb.sha256 2>/dev/null || true)" != "$sum" ]; then
		say "installing mesh $(dpkg-deb --field "$DEB" Version)"
		DEBIAN_FRONTEND=noninteractive apt-get -q install -y --reinstall "$DEB"
		mkdir -p /var/lib/mesh-lab
		echo "$sum" >/var/lib/mesh-lab/deb.sha256
	fi
	# The vagrant user drives the cluster with meshctl, as members of the docker group drive Docker.
	if id vagrant >/dev/null 2>&1; then
		usermod --append --groups mesh vagrant
	fi
fi

# meshd's settings: the private network's address (not the management network's), the load
# balancer, and metrics on that address. IPVS needs its module loaded before meshd starts.
if step config; then
	if [ "$LB_BACKEND" = ipvs ]; then
		modprobe ip_vs
		echo ip_vs >/etc/modules-load.d/mesh-ipvs.conf
	fi
	config=/etc/mesh/meshd.toml
	wanted=$(printf '# Written by vagrant/provision.sh.\nadvertise-addr = "%s"\nlb-backend = "%s"\nmetrics-addr = "%s:9323"\n' \
		"$ADDR" "$LB_BACKEND" "$ADDR")
	if [ "$(cat "$config" 2>/dev/null || true)" != "$wanted" ]; then
		say "configuring meshd: advertise-addr $ADDR, lb-backend $LB_BACKEND"
		printf '%s\n' "$wanted" >"$config"
		systemctl restart meshd.service
	fi
	systemctl is-active --quiet meshd.service || fail "meshd is not running: see journalctl -u meshd"
fi

# The demo image on every node, before it joins: the demo's tasks may land on any node.
if step demo && ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
	tar=${MESH_IMAGE_TAR:-/usr/share/mesh-lab/busybox-rootfs.tar}
	[ -f "$tar" ] || tar=/usr/share/mesh-lab/busybox-rootfs.tar
	[ -f "$tar" ] || fail "no image root file system at ${MESH_IMAGE_TAR:-} or in the box"
	say "importing $IMAGE"
	docker import --change "ENV PATH=/bin" "$tar" "$IMAGE" >/dev/null
fi

in_swarm() {
	meshctl info | grep -q '^Swarm: active'
}

token() {
	if [ -n "${MESH_TOKEN_CMD:-}" ]; then
		sh -c "$MESH_TOKEN_CMD $1"
	else
		[ -n "${MESH_LAB_KEY:-}" ] || fail "MESH_LAB_KEY or MESH_TOKEN_CMD is needed to join"
		ssh -i "$MESH_LAB_KEY" -o BatchMode=yes -o ConnectTimeout=5 \
			-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR \
			"vagrant@$FIRST" "$1"
	fi
}

if step swarm; then
	if in_swarm; then
		say "already in the swarm"
	elif [ "$ROLE" = init ]; then
		say "creating the swarm on $ADDR"
		meshctl swarm init --advertise-addr "$ADDR"
	else
		say "joining $FIRST:2377 as a $ROLE (waiting up to ${JOIN_TIMEOUT}s for its swarm)"
		waited=0
		until joining=$(token "$ROLE" 2>/dev/null) && [ -n "$joining" ]; do
			[ "$waited" -lt "$JOIN_TIMEOUT" ] || fail "no join token from $FIRST after ${JOIN_TIMEOUT}s"
			sleep 5
			waited=$((waited + 5))
		done
		# Managers join one at a time: a busy Raft may refuse one for a moment.
		until meshctl swarm join --token "$joining" --advertise-addr "$ADDR" "$FIRST:2377"; do
			[ "$waited" -lt "$JOIN_TIMEOUT" ] || fail "could not join $FIRST:2377"
			sleep 5
			waited=$((waited + 5))
		done
	fi
	# node1 hands the lab's key holders a join token and nothing else.
	if [ "$ROLE" = init ] && [ -n "${MESH_LAB_PUBKEY:-}" ]; then
		[ -f "$MESH_LAB_PUBKEY" ] || fail "$MESH_LAB_PUBKEY: no such key"
		cat >/usr/local/sbin/mesh-lab-token <<-'EOF'
			#!/bin/sh
			# The only command the lab's key may run on node1 (vagrant/provision.sh).
			case "$SSH_ORIGINAL_COMMAND" in
			worker | manager) exec sudo -n /usr/bin/meshctl swarm join-token -q "$SSH_ORIGINAL_COMMAND" ;;
			*) echo "mesh-lab-token: worker or manager" >&2; exit 2 ;;
			esac
		EOF
		chmod 0755 /usr/local/sbin/mesh-lab-token
		keys=/home/vagrant/.ssh/authorized_keys
		entry="restrict,command=\"/usr/local/sbin/mesh-lab-token\" $(cat "$MESH_LAB_PUBKEY")"
		grep -qxF "$entry" "$keys" || echo "$entry" >>"$keys"
		rm -f "$MESH_LAB_PUBKEY"
	fi
	if [ -n "${MESH_LAB_KEY:-}" ]; then
		rm -f "$MESH_LAB_KEY"
	fi
fi

# The demo service, once, from node1.
if step demo; then
	if [ "$ROLE" = init ] && ! meshctl service inspect "$SERVICE" >/dev/null 2>&1; then
		replicas=${MESH_DEMO_REPLICAS:-3}
		say "creating the demo service: $replicas tasks published on port $PUBLISHED"
		meshctl service create --detach --name "$SERVICE" --replicas "$replicas" \
			--publish "$PUBLISHED:80" "$IMAGE" \
			sh -c 'mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www'
	fi
fi
say "done: $(hostname) is a ${ROLE} at $ADDR"
