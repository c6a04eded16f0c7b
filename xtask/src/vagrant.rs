//! `cargo xtask vagrant-box`: the Vagrant box `vagrant/Vagrantfile` boots with the libvirt
//! provider. No box catalogue is reachable from the machines mesh is built on, so the box is made
//! here: a Debian 12 root from debootstrap with Debian's own kernel (which has IPVS), Docker, an
//! SSH server and the `vagrant` user with Vagrant's well-known key, written onto an ext4 disk that
//! boots through extlinux, converted to qcow2 and packed as a libvirt box, then added to Vagrant
//! as `mesh/debian12`.
//!
//! The disk has no partition table: the file system starts at sector 0, and extlinux's boot
//! sector sits in the two sectors ext4 leaves free there, which the BIOS loads like an MBR. So
//! no loop device has to be partitioned (these machines have no udev to make the partitions'
//! device nodes) and the kernel's root is the whole disk, `/dev/vda`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail, ensure};
use mesh_tests::process::{run_shown, run_sync_ok};

use crate::fresh::{self, SUITE};
use crate::{deps, step};

/// Where the root, the disk and the box are made.
const DIR: &str = "target/vagrant";
/// The name the box is added to Vagrant under; `vagrant/Vagrantfile` asks for it.
pub const BOX_NAME: &str = "mesh/debian12";
/// The box file, under [`DIR`].
const BOX_FILE: &str = "mesh-debian12.box";
/// What the box holds beyond debootstrap's minimal base: a kernel that boots on its own and has
/// IPVS, systemd as init, a way onto the network (DHCP on the first interface; ifupdown is what
/// Vagrant's Debian guest support configures the private network with), SSH and sudo for
/// Vagrant, Docker for the tasks, and the tools the provisioning and a person at the console use.
const INCLUDE: &[&str] = &[
    "linux-image-amd64",
    "systemd-sysv",
    "ifupdown",
    "isc-dhcp-client",
    "openssh-server",
    "sudo",
    "docker.io",
    // Debian's kernel enables AppArmor, and then Docker refuses to start containers unless it
    // can load its profile, which takes apparmor_parser.
    "apparmor",
    "iproute2",
    "iptables",
    "ipvsadm",
    "kmod",
    "procps",
    "curl",
    "ca-certificates",
    "netbase",
    "less",
];
/// Where the box keeps the root file system of the test image (`mesh/busybox`), which
/// the provisioning imports into Docker for the lab's demo service.
const IMAGE_IN_BOX: &str = "usr/share/mesh-lab/busybox-rootfs.tar";

#[derive(clap::Args)]
pub struct BoxArgs {
    /// The Debian mirror debootstrap and the box's package sources use.
    #[arg(long, default_value = "http://deb.debian.org/debian")]
    mirror: String,
    /// Build the Debian root again even if a complete one is cached.
    #[arg(long)]
    rebuild: bool,
    /// The size of the box's disk in GiB (a sparse file: only what is written takes space).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(4..=512))]
    disk_gib: u32,
    /// Build the box file only; do not add it to Vagrant.
    #[arg(long)]
    no_add: bool,
}

pub fn build(args: &BoxArgs) -> anyhow::Result<()> {
    if !mesh_tests::skip::is_root() {
        bail!("building the box needs root (debootstrap, chroot, a loop mount)");
    }
    deps::install_packages(deps::VAGRANT_BOX_PACKAGES)?;
    let dir = PathBuf::from(DIR);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {DIR}"))?;
    let root = step::run(
        "a Debian 12 root with Debian's kernel, Docker and SSH (debootstrap, cached)",
        "check that the mirror answers (--mirror), then run again; --rebuild starts over",
        || debian_root(&dir, &args.mirror, args.rebuild),
    )?;
    step::run(
        "making it a Vagrant guest (the vagrant user and key, networking, boot loader, image)",
        "read the error above; --rebuild builds the root again from scratch",
        || configure(&root, &args.mirror),
    )?;
    let disk = dir.join("disk.raw");
    step::run(
        &format!(
            "an ext4 disk of {} GiB that boots with extlinux",
            args.disk_gib
        ),
        "needs a free loop device (`losetup -f`) and mke2fs from e2fsprogs",
        || make_disk(&root, &disk, args.disk_gib),
    )?;
    let box_file = dir.join(BOX_FILE);
    step::run(
        &format!("packing the libvirt box {}", box_file.display()),
        "needs qemu-img (qemu-utils) and space under target/",
        || pack(&disk, &dir, &box_file, args.disk_gib),
    )?;
    if args.no_add {
        eprintln!("box: {} (not added to Vagrant)", box_file.display());
        return Ok(());
    }
    let file = box_file.display().to_string();
    step::run(
        &format!("adding it to Vagrant as {BOX_NAME}"),
        "check `vagrant box list`; `vagrant box remove mesh/debian12` and run again",
        || {
            run_shown(
                "vagrant",
                &["box", "add", "--force", "--name", BOX_NAME, &file],
                &[],
            )
        },
    )?;
    eprintln!(
        "box {BOX_NAME} is ready: `cargo xtask dist`, then `cd vagrant && vagrant up` \
         (on a machine without KVM: MESH_LIBVIRT_DRIVER=qemu vagrant up)"
    );
    Ok(())
}

/// The cached root with [`INCLUDE`] under `dir`, made once with debootstrap (again when
/// `rebuild`). A root is only used once debootstrap has finished it.
fn debian_root(dir: &Path, mirror: &str, rebuild: bool) -> anyhow::Result<PathBuf> {
    let root = dir.join(format!("root-{SUITE}"));
    let complete = dir.join(format!("root-{SUITE}.complete"));
    if complete.exists() && !rebuild {
        eprintln!("    reusing {}", root.display());
        return Ok(root);
    }
    let _ = std::fs::remove_file(&complete);
    fresh::remove_root(&root)?;
    let include = format!("--include={}", INCLUDE.join(","));
    let target = root.display().to_string();
    run_shown(
        "debootstrap",
        &["--variant=minbase", &include, SUITE, &target, mirror],
        &[],
    )?;
    std::fs::write(&complete, b"")?;
    Ok(root)
}

/// Turns the root into what Vagrant expects of a guest.
fn configure(root: &Path, mirror: &str) -> anyhow::Result<()> {
    fresh::reach_packages(root, mirror)?;
    // The guest's resolver comes from DHCP, not from this machine.
    let _ = std::fs::remove_file(root.join("etc/resolv.conf"));
    write(root, "etc/hostname", "mesh\n")?;
    write(
        root,
        "etc/hosts",
        "127.0.0.1\tlocalhost\n127.0.1.1\tmesh\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    )?;
    write(
        root,
        "etc/fstab",
        "/dev/vda\t/\text4\tdefaults,errors=remount-ro\t0\t1\n",
    )?;
    // Interfaces are eth0, eth1, … (net.ifnames=0 below): the first is Vagrant's management
    // network, with DHCP; Vagrant adds the private network's stanza itself.
    write(
        root,
        "etc/network/interfaces",
        "source /etc/network/interfaces.d/*\n\nauto lo\niface lo inet loopback\n\n\
         allow-hotplug eth0\niface eth0 inet dhcp\n",
    )?;
    // Every VM gets its own machine id (and so its own DHCP identity) at first boot.
    write(root, "etc/machine-id", "")?;
    let _ = std::fs::remove_file(root.join("var/lib/dbus/machine-id"));
    // Host keys are made at the first boot, so that no two VMs share them.
    for entry in std::fs::read_dir(root.join("etc/ssh"))?.flatten() {
        if entry.file_name().to_string_lossy().starts_with("ssh_host_") {
            std::fs::remove_file(entry.path())?;
        }
    }
    write(
        root,
        "etc/systemd/system/ssh.service.d/host-keys.conf",
        "# The box ships without host keys: each VM makes its own before sshd checks its config.\n\
         [Service]\nExecStartPre=\nExecStartPre=/usr/bin/ssh-keygen -A\nExecStartPre=/usr/sbin/sshd -t\n",
    )?;
    vagrant_user(root)?;
    boot_loader(root)?;
    // The test image's root file system, for the lab's demo service.
    let image_dir = PathBuf::from(DIR).join("image");
    let _ = std::fs::remove_dir_all(&image_dir);
    std::fs::create_dir_all(&image_dir)?;
    let rootfs = mesh_tests::image::build_rootfs(&image_dir)?;
    let into = root.join(IMAGE_IN_BOX);
    std::fs::create_dir_all(into.parent().context("image path has a parent")?)?;
    std::fs::copy(&rootfs, &into)
        .with_context(|| format!("cannot copy {} into the root", rootfs.display()))?;
    std::fs::copy(&rootfs, PathBuf::from(DIR).join("busybox-rootfs.tar"))?;
    chroot(root, &["apt-get", "clean"])
}

/// The `vagrant` user: password `vagrant`, sudo without a password, and Vagrant's insecure public
/// key, which Vagrant replaces with a key of its own at the first `vagrant up`.
fn vagrant_user(root: &Path) -> anyhow::Result<()> {
    if !std::fs::read_to_string(root.join("etc/passwd"))?.contains("\nvagrant:") {
        chroot(
            root,
            &[
                "useradd",
                "--create-home",
                "--shell",
                "/bin/bash",
                "vagrant",
            ],
        )?;
    }
    run_shown(
        "sh",
        &[
            "-c",
            "echo vagrant:vagrant | chroot \"$0\" chpasswd",
            &root.display().to_string(),
        ],
        &[],
    )?;
    write(
        root,
        "etc/sudoers.d/vagrant",
        "vagrant ALL=(ALL) NOPASSWD: ALL\nDefaults:vagrant !requiretty\n",
    )?;
    let key = insecure_key()?;
    write(root, "home/vagrant/.ssh/authorized_keys", &key)?;
    chroot(
        root,
        &["chown", "-R", "vagrant:vagrant", "/home/vagrant/.ssh"],
    )?;
    chroot(root, &["chmod", "0700", "/home/vagrant/.ssh"])?;
    chroot(
        root,
        &["chmod", "0600", "/home/vagrant/.ssh/authorized_keys"],
    )?;
    std::fs::set_permissions(
        root.join("etc/sudoers.d/vagrant"),
        std::os::unix::fs::PermissionsExt::from_mode(0o440),
    )?;
    Ok(())
}

/// Vagrant's well-known public key, as installed with Vagrant (a public key: every base box
/// carries it).
fn insecure_key() -> anyhow::Result<String> {
    let gems = Path::new("/usr/share/rubygems-integration/all/gems");
    let found = std::fs::read_dir(gems)
        .ok()
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("vagrant-2"))
        .map(|e| e.path().join("keys/vagrant.pub"))
        .find(|p| p.is_file());
    let path = found.context(
        "Vagrant's insecure public key (keys/vagrant.pub of the vagrant package) is not installed: \
         `apt-get install vagrant`",
    )?;
    std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))
}

/// extlinux's configuration: Debian's newest kernel and initramfs in the root, the console on the
/// serial port (what `virsh console` and the VM's log show), classic interface names.
fn boot_loader(root: &Path) -> anyhow::Result<()> {
    let boot = root.join("boot");
    let mut kernels: Vec<String> = std::fs::read_dir(&boot)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("vmlinuz-"))
        .collect();
    kernels.sort();
    let kernel = kernels.pop().context("the root has no kernel in /boot")?;
    let version = kernel.trim_start_matches("vmlinuz-");
    let initrd = format!("initrd.img-{version}");
    ensure!(
        boot.join(&initrd).is_file(),
        "the root has no /boot/{initrd}"
    );
    write(
        root,
        "boot/extlinux/extlinux.conf",
        &format!(
            "DEFAULT debian\nTIMEOUT 1\n\nLABEL debian\n  KERNEL /boot/{kernel}\n  \
             INITRD /boot/{initrd}\n  APPEND root=/dev/vda rw console=tty0 console=ttyS0,115200 \
             net.ifnames=0 biosdevname=0\n"
        ),
    )
}

/// A sparse raw disk holding the root as an ext4 file system, with extlinux installed.
fn make_disk(root: &Path, disk: &Path, gib: u32) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(disk);
    let file = disk.display().to_string();
    // 64-bit block numbers and metadata checksums are features extlinux cannot boot from.
    run_shown(
        "mke2fs",
        &[
            "-q",
            "-t",
            "ext4",
            "-F",
            "-L",
            "mesh-root",
            "-O",
            "^64bit,^metadata_csum",
            "-d",
            &root.display().to_string(),
            &file,
            &format!("{gib}G"),
        ],
        &[],
    )?;
    let mount = disk.with_extension("mnt");
    std::fs::create_dir_all(&mount)?;
    let point = mount.display().to_string();
    run_shown("mount", &["-o", "loop", &file, &point], &[])?;
    let installed = run_shown(
        "extlinux",
        &["--install", &format!("{point}/boot/extlinux")],
        &[],
    );
    let unmounted = run_shown("umount", &[&point], &[]);
    installed?;
    unmounted?;
    std::fs::remove_dir(&mount)?;
    Ok(())
}

/// The libvirt box: `box.img` (qcow2), `metadata.json` and a Vagrantfile, in one tar.
fn pack(disk: &Path, dir: &Path, box_file: &Path, gib: u32) -> anyhow::Result<()> {
    let staging = dir.join("box");
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging)?;
    let image = staging.join("box.img");
    run_shown(
        "qemu-img",
        &[
            "convert",
            "-O",
            "qcow2",
            &disk.display().to_string(),
            &image.display().to_string(),
        ],
        &[],
    )?;
    write(
        &staging,
        "metadata.json",
        &format!("{{\"provider\": \"libvirt\", \"format\": \"qcow2\", \"virtual_size\": {gib}}}\n"),
    )?;
    write(
        &staging,
        "Vagrantfile",
        "# The box's own defaults; vagrant/Vagrantfile in mesh's repository sets the rest.\n\
         Vagrant.configure(\"2\") do |config|\n  config.vm.provider :libvirt do |libvirt|\n    \
         libvirt.disk_bus = \"virtio\"\n  end\nend\n",
    )?;
    let _ = std::fs::remove_file(box_file);
    run_sync_ok(
        "tar",
        &[
            "-C",
            &staging.display().to_string(),
            "-cf",
            &box_file.display().to_string(),
            "metadata.json",
            "Vagrantfile",
            "box.img",
        ],
    )?;
    std::fs::remove_dir_all(&staging)?;
    std::fs::remove_file(disk)?;
    Ok(())
}

fn chroot(root: &Path, command: &[&str]) -> anyhow::Result<()> {
    let mut args = vec![root.to_str().context("the root's path is not UTF-8")?];
    args.extend_from_slice(command);
    run_shown("chroot", &args, &[("DEBIAN_FRONTEND", "noninteractive")])
}

fn write(root: &Path, path: &str, contents: &str) -> anyhow::Result<()> {
    let file = root.join(path);
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(&file, contents).with_context(|| format!("cannot write {}", file.display()))
}

/// `vagrant validate` of `vagrant/Vagrantfile` with its defaults, and the one-line refusal of a
/// bad setting (what `cargo xtask test` runs: CI has no VMs to bring up).
pub fn validate() -> anyhow::Result<()> {
    let dir = Path::new("vagrant");
    let run = |env: &[(&str, &str)]| -> anyhow::Result<std::process::Output> {
        std::process::Command::new("vagrant")
            .arg("validate")
            .current_dir(dir)
            .envs(env.iter().copied())
            // Vagrant's own checks for newer versions and plugins reach out to the network.
            .env("VAGRANT_CHECKPOINT_DISABLE", "1")
            .env("VAGRANT_DISABLE_VERSION_CHECK", "1")
            .output()
            .context("cannot run vagrant (`cargo xtask deps` installs it)")
    };
    let good = run(&[])?;
    let said = String::from_utf8_lossy(&good.stdout);
    ensure!(
        good.status.success() && said.contains("Vagrantfile validated successfully"),
        "vagrant validate: {said}{}",
        String::from_utf8_lossy(&good.stderr)
    );
    eprintln!("    {}", said.trim());
    let bad = run(&[("MESH_WORKERS", "many")])?;
    let refused = String::from_utf8_lossy(&bad.stderr);
    ensure!(
        !bad.status.success()
            && refused.trim() == r#"MESH_WORKERS="many": expected a whole number from 0 to 20"#,
        "MESH_WORKERS=many was not refused in one line: {refused}"
    );
    eprintln!("    MESH_WORKERS=many refused: {}", refused.trim());
    Ok(())
}
