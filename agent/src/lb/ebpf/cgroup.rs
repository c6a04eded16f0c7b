//! Finding the cgroup2 hierarchy, where the programs attach.

use std::path::PathBuf;

/// The mount point of the cgroup2 hierarchy's root in a `/proc/PID/mountinfo` text (the first
/// such mount: `/sys/fs/cgroup` on a unified host, `/sys/fs/cgroup/unified` on a hybrid one).
pub(super) fn cgroup2_root(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (mount, fs) = line.split_once(" - ")?;
        let fields: Vec<&str> = mount.split(' ').collect();
        let (root, point) = (*fields.get(3)?, *fields.get(4)?);
        (fs.split(' ').next() == Some("cgroup2") && root == "/").then(|| unescape(point).into())
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space, and so on).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .map(|d| d.iter().fold(0u32, |n, c| n * 8 + u32::from(c - b'0')));
        match octal.and_then(|n| u8::try_from(n).ok()) {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
22 1 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
25 22 0:23 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:24 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
27 25 0:25 / /sys/fs/cgroup/cpu rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,cpu
";

    #[test]
    fn finds_the_cgroup2_root_of_a_hybrid_host() {
        assert_eq!(
            cgroup2_root(HYBRID),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
    }

    #[test]
    fn finds_the_cgroup2_root_of_a_unified_host_and_skips_sub_mounts() {
        let info = "\
30 25 0:26 /docker/abc /mnt/sub rw shared:12 - cgroup2 cgroup2 rw
31 22 0:26 / /sys/fs/cgroup rw,nosuid master:4 - cgroup2 cgroup2 rw
";
        assert_eq!(cgroup2_root(info), Some(PathBuf::from("/sys/fs/cgroup")));
    }

    #[test]
    fn unescapes_mount_points() {
        let info = "31 22 0:26 / /run/my\\040cgroup rw - cgroup2 none rw\n";
        assert_eq!(cgroup2_root(info), Some(PathBuf::from("/run/my cgroup")));
        assert_eq!(unescape("a\\134b\\0"), "a\\b\\0");
    }

    #[test]
    fn no_cgroup2_mount() {
        let v1_only = HYBRID.replace("cgroup2", "cgroup");
        assert_eq!(cgroup2_root(&v1_only), None);
        assert_eq!(cgroup2_root(""), None);
    }
}
