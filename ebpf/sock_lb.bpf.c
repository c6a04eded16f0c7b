// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
//
// The socket-level service load balancer: cgroup sock_addr hooks that rewrite a service's virtual
// IP and port to one of its backends when a socket connects (TCP, connected UDP) or sends without
// connecting (UDP), and that give a UDP reply the VIP back as its source.
//
// Everything is keyed by the socket's network namespace cookie, so one loaded copy acts only on the
// sandboxes its meshd registered; every other socket passes through untouched. Several copies (one
// per meshd) attach side by side to the cgroup2 root as cgroup links (multi-program by nature).
//
// The lookup is two hash lookups at most for the service (exact port, then the port-0 wildcard)
// and one for the Maglev slot that the socket cookie hashes to. The structs below are mirrored in
// agent/src/lb/ebpf/maps.rs; their sizes are asserted on both sides.

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>

// From <sys/socket.h>, which is a libc header and not for the BPF target.
#define AF_INET 2

// A service as one sandbox sees it. Addresses and ports are in network byte order.
struct lb_service_key {
	__u64 netns_cookie;
	__u32 vip;
	__u16 port; // 0: every port of the VIP
	__u8 proto; // IPPROTO_TCP or IPPROTO_UDP
	__u8 pad;
};

// Which Maglev table balances the service; size 0 means no backend: connect() is refused.
struct lb_service {
	__u32 table_id;
	__u32 table_size;
};

struct lb_slot_key {
	__u32 table_id;
	__u32 slot;
};

struct lb_backend {
	__u32 addr;
	__u16 port; // 0: the port the client asked for
	__u16 pad;
};

// A UDP socket that talks to a backend in place of a VIP: replies from the backend get the VIP
// back as their source.
struct lb_revnat_key {
	__u64 socket_cookie;
	__u32 addr;
	__u16 port;
	__u16 pad;
};

struct lb_revnat {
	__u64 netns_cookie;
	__u32 vip;
	__u16 port;         // the port the client asked for
	__u16 service_port; // the service's key port (0 for a wildcard service)
};

_Static_assert(sizeof(struct lb_service_key) == 16, "lb_service_key layout");
_Static_assert(sizeof(struct lb_service) == 8, "lb_service layout");
_Static_assert(sizeof(struct lb_slot_key) == 8, "lb_slot_key layout");
_Static_assert(sizeof(struct lb_backend) == 8, "lb_backend layout");
_Static_assert(sizeof(struct lb_revnat_key) == 16, "lb_revnat_key layout");
_Static_assert(sizeof(struct lb_revnat) == 16, "lb_revnat layout");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, struct lb_service_key);
	__type(value, struct lb_service);
} lb_services SEC(".maps");

// Tables are shared by every sandbox that sees the same backends: 2^18 slots hold about 500
// tables of up to 5 backends (509 slots each); the kernel reserves 4 MiB of buckets up front.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1 << 18);
	__type(key, struct lb_slot_key);
	__type(value, struct lb_backend);
} lb_slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct lb_revnat_key);
	__type(value, struct lb_revnat);
} lb_revnat SEC(".maps");

// Pass the socket on unchanged; connect4 and sendmsg4 may also return REFUSE (EPERM).
#define VERDICT_PASS 1
#define VERDICT_REFUSE 0

// A 64-bit finaliser (from MurmurHash3) that spreads sequential socket cookies over the table.
static __always_inline __u64 mix64(__u64 x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ULL;
	x ^= x >> 33;
	return x;
}

static __always_inline struct lb_service *find_service(struct lb_service_key *key)
{
	struct lb_service *svc = bpf_map_lookup_elem(&lb_services, key);
	if (svc)
		return svc;
	key->port = 0;
	return bpf_map_lookup_elem(&lb_services, key);
}

// Rewrites the destination of a socket in a registered sandbox that addresses a service.
// `record` keeps a reverse entry so that replies (UDP) show the VIP as their source.
static __always_inline int balance(struct bpf_sock_addr *ctx, __u8 proto, int record)
{
	if (ctx->user_family != AF_INET)
		return VERDICT_PASS;
	__u32 vip = ctx->user_ip4;
	__u16 port = (__u16)ctx->user_port;
	struct lb_service_key key = {
		.netns_cookie = bpf_get_netns_cookie(ctx),
		.vip = vip,
		.port = port,
		.proto = proto,
	};
	struct lb_service *svc = find_service(&key);
	if (!svc)
		return VERDICT_PASS;
	__u32 size = svc->table_size;
	if (size == 0)
		return VERDICT_REFUSE;
	__u64 socket_cookie = bpf_get_socket_cookie(ctx);
	struct lb_slot_key slot = {
		.table_id = svc->table_id,
		.slot = (__u32)(mix64(socket_cookie) % size),
	};
	struct lb_backend *backend = bpf_map_lookup_elem(&lb_slots, &slot);
	if (!backend)
		// The table is being replaced under us: refuse rather than leak the VIP onto the wire.
		return VERDICT_REFUSE;
	__u16 to_port = backend->port ? backend->port : port;
	ctx->user_ip4 = backend->addr;
	ctx->user_port = (__u32)to_port;
	if (record) {
		struct lb_revnat_key rkey = {
			.socket_cookie = socket_cookie,
			.addr = backend->addr,
			.port = to_port,
		};
		struct lb_revnat rval = {
			.netns_cookie = key.netns_cookie,
			.vip = vip,
			.port = port,
			.service_port = key.port,
		};
		struct lb_revnat *old = bpf_map_lookup_elem(&lb_revnat, &rkey);
		if (!old || old->vip != vip || old->port != port || old->service_port != key.port)
			bpf_map_update_elem(&lb_revnat, &rkey, &rval, BPF_ANY);
	}
	return VERDICT_PASS;
}

SEC("cgroup/connect4")
int lb_connect4(struct bpf_sock_addr *ctx)
{
	__u32 proto = ctx->protocol;
	if (proto == IPPROTO_TCP)
		return balance(ctx, IPPROTO_TCP, 0);
	if (proto == IPPROTO_UDP)
		return balance(ctx, IPPROTO_UDP, 1);
	return VERDICT_PASS;
}

SEC("cgroup/sendmsg4")
int lb_sendmsg4(struct bpf_sock_addr *ctx)
{
	if (ctx->protocol != IPPROTO_UDP)
		return VERDICT_PASS;
	return balance(ctx, IPPROTO_UDP, 1);
}

SEC("cgroup/recvmsg4")
int lb_recvmsg4(struct bpf_sock_addr *ctx)
{
	if (ctx->user_family != AF_INET || ctx->protocol != IPPROTO_UDP)
		return VERDICT_PASS;
	struct lb_revnat_key key = {
		.socket_cookie = bpf_get_socket_cookie(ctx),
		.addr = ctx->user_ip4,
		.port = (__u16)ctx->user_port,
	};
	struct lb_revnat *rev = bpf_map_lookup_elem(&lb_revnat, &key);
	if (!rev)
		return VERDICT_PASS;
	ctx->user_ip4 = rev->vip;
	ctx->user_port = (__u32)rev->port;
	return VERDICT_PASS;
}

// The kernel reads this string; the file is dual-licensed, and GPL is the side it understands.
char LICENSE[] SEC("license") = "GPL";
