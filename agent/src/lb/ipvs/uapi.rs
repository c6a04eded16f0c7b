//! The kernel's numbers for the IPVS generic-netlink family, from `include/uapi/linux/ip_vs.h`,
//! `include/uapi/linux/genetlink.h` and `include/uapi/linux/netlink.h`. Names follow the kernel's.

/// `struct genlmsghdr`: cmd (u8), version (u8), reserved (u16).
pub const GENL_HDRLEN: usize = 4;
/// The generic-netlink controller, which maps family names to ids.
pub const GENL_ID_CTRL: u16 = 0x10;
/// The controller family's version (the kernel does not check it on requests).
pub const GENL_CTRL_VERSION: u8 = 2;
/// Message types below this are netlink control messages (`NLMSG_MIN_TYPE`).
pub const NLMSG_MIN_TYPE: u16 = 0x10;

pub const CTRL_CMD_NEWFAMILY: u8 = 1;
pub const CTRL_CMD_GETFAMILY: u8 = 3;
pub const CTRL_ATTR_FAMILY_ID: u16 = 1;
pub const CTRL_ATTR_FAMILY_NAME: u16 = 2;
pub const CTRL_ATTR_VERSION: u16 = 3;

pub const IPVS_GENL_NAME: &str = "IPVS";
pub const IPVS_GENL_VERSION: u8 = 1;

pub const IPVS_CMD_NEW_SERVICE: u8 = 1;
pub const IPVS_CMD_SET_SERVICE: u8 = 2;
pub const IPVS_CMD_DEL_SERVICE: u8 = 3;
pub const IPVS_CMD_GET_SERVICE: u8 = 4;
pub const IPVS_CMD_NEW_DEST: u8 = 5;
pub const IPVS_CMD_SET_DEST: u8 = 6;
pub const IPVS_CMD_DEL_DEST: u8 = 7;
pub const IPVS_CMD_GET_DEST: u8 = 8;
/// The command of the kernel's reply to `IPVS_CMD_GET_INFO`.
pub const IPVS_CMD_SET_INFO: u8 = 14;
pub const IPVS_CMD_GET_INFO: u8 = 15;
pub const IPVS_CMD_FLUSH: u8 = 17;

pub const IPVS_CMD_ATTR_SERVICE: u16 = 1;
pub const IPVS_CMD_ATTR_DEST: u16 = 2;

pub const IPVS_SVC_ATTR_AF: u16 = 1;
pub const IPVS_SVC_ATTR_PROTOCOL: u16 = 2;
/// `union nf_inet_addr`: 16 bytes, an IPv4 address in the first 4.
pub const IPVS_SVC_ATTR_ADDR: u16 = 3;
/// Network byte order, although the policy says `NLA_U16`.
pub const IPVS_SVC_ATTR_PORT: u16 = 4;
pub const IPVS_SVC_ATTR_FWMARK: u16 = 5;
/// `NLA_NUL_STRING`, at most `IP_VS_SCHEDNAME_MAXLEN - 1` bytes before the NUL.
pub const IPVS_SVC_ATTR_SCHED_NAME: u16 = 6;
/// `struct ip_vs_flags { __u32 flags; __u32 mask; }` in host byte order.
pub const IPVS_SVC_ATTR_FLAGS: u16 = 7;
/// Persistence timeout in seconds.
pub const IPVS_SVC_ATTR_TIMEOUT: u16 = 8;
/// Persistence netmask, network byte order.
pub const IPVS_SVC_ATTR_NETMASK: u16 = 9;

pub const IPVS_DEST_ATTR_ADDR: u16 = 1;
/// Network byte order, like the service's port.
pub const IPVS_DEST_ATTR_PORT: u16 = 2;
pub const IPVS_DEST_ATTR_FWD_METHOD: u16 = 3;
pub const IPVS_DEST_ATTR_WEIGHT: u16 = 4;
pub const IPVS_DEST_ATTR_U_THRESH: u16 = 5;
pub const IPVS_DEST_ATTR_L_THRESH: u16 = 6;
pub const IPVS_DEST_ATTR_ACTIVE_CONNS: u16 = 7;
pub const IPVS_DEST_ATTR_INACT_CONNS: u16 = 8;
pub const IPVS_DEST_ATTR_PERSIST_CONNS: u16 = 9;
pub const IPVS_DEST_ATTR_ADDR_FAMILY: u16 = 11;

pub const IPVS_INFO_ATTR_VERSION: u16 = 1;
pub const IPVS_INFO_ATTR_CONN_TAB_SIZE: u16 = 2;

/// The longest scheduler name the kernel accepts, without its NUL.
pub const IP_VS_SCHEDNAME_MAXLEN: usize = 16 - 1;

pub const IP_VS_SVC_F_PERSISTENT: u32 = 0x0001;
/// Set by the kernel on every service it has hashed; never meaningful to send.
pub const IP_VS_SVC_F_HASHED: u32 = 0x0002;
pub const IP_VS_SVC_F_ONEPACKET: u32 = 0x0004;
pub const IP_VS_SVC_F_SCHED1: u32 = 0x0008;
pub const IP_VS_SVC_F_SCHED2: u32 = 0x0010;
pub const IP_VS_SVC_F_SCHED3: u32 = 0x0020;

pub const IP_VS_CONN_F_MASQ: u32 = 0;
pub const IP_VS_CONN_F_TUNNEL: u32 = 2;
pub const IP_VS_CONN_F_DROUTE: u32 = 3;

pub const AF_INET: u16 = 2;
pub const IPPROTO_TCP: u16 = 6;
pub const IPPROTO_UDP: u16 = 17;
pub const IPPROTO_SCTP: u16 = 132;
