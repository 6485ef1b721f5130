//! The lab network: two network namespaces (server side and client side),
//! each holding one end of the path as a TUN device, addressed from the
//! benchmarking range 198.18.0.0/15 (RFC 2544). Nothing crosses between
//! them unless the forwarder copies it. Everything created here is removed
//! on drop; a run killed with SIGKILL is swept by the next one.

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context};

use super::tun::TunDevice;

/// The server's address, inside the server namespace.
pub const SERVER_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The clients' address, inside the client namespace.
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

const PREFIX: &str = "rally-lab-";

/// Why namespaces cannot be used here, or `Ok` when they can.
pub fn check_support() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not running as root (namespaces and TUN devices need CAP_NET_ADMIN)".into());
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Err("/dev/net/tun is missing".into());
    }
    match Command::new("ip")
        .args(["netns", "list"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => {}
        Ok(s) => return Err(format!("`ip netns list` failed ({s})")),
        Err(e) => return Err(format!("the `ip` command (iproute2) is unavailable: {e}")),
    }
    // Creating a TUN device proves the module and the permission.
    TunDevice::create("rlabchk%d").map_err(|e| format!("cannot create a TUN device: {e}"))?;
    Ok(())
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running ip {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A named network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    pub fn create(name: String) -> anyhow::Result<Netns> {
        ip(&["netns", "add", &name])?;
        let ns = Netns { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip netns exec NAME program`: a command that runs inside.
    pub fn command(&self, program: &std::path::Path) -> tokio::process::Command {
        let mut c = tokio::process::Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// `cmd` (program, arguments and environment; e.g. a
    /// `rally::launch::Launch::command`) run inside. `ip netns exec` execs
    /// the program, so the child's pid is the program's.
    pub fn wrap(&self, cmd: &std::process::Command) -> tokio::process::Command {
        let mut c = self.command(std::path::Path::new(cmd.get_program()));
        c.args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        c
    }

    /// Runs `f` on a thread that has joined this namespace. Sockets created
    /// there stay in the namespace when used from other threads afterwards.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
        let path = format!("/run/netns/{}", self.name);
        let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: setns on a namespace descriptor we hold open; it
                // changes only this (scoped, short-lived) thread.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(anyhow::Error::from(std::io::Error::last_os_error())
                        .context("setns into the lab namespace"));
                }
                Ok(f())
            })
            .join()
            .map_err(|_| anyhow::anyhow!("thread in namespace panicked"))?
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("rally lab: could not delete namespace {}: {e:#}", self.name);
        }
    }
}

/// The two namespaces and the TUN device at the edge of each. Field order
/// is drop order: devices close before their namespaces go.
#[derive(Debug)]
pub struct LabNet {
    pub server_tun: TunDevice,
    pub client_tun: TunDevice,
    pub server_ns: Netns,
    pub client_ns: Netns,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl LabNet {
    /// Creates the namespace pair with names unique to this process and
    /// call, so concurrent runs (and parallel tests) never collide.
    pub fn create() -> anyhow::Result<LabNet> {
        sweep_stale();
        let id = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let server_ns = Netns::create(format!("{id}-s"))?;
        let client_ns = Netns::create(format!("{id}-c"))?;
        let server_tun = TunDevice::create("rlab%d").context("creating the server TUN")?;
        let client_tun = TunDevice::create("rlab%d").context("creating the client TUN")?;
        for (tun, ns, local, peer) in [
            (&server_tun, &server_ns, SERVER_ADDR, CLIENT_ADDR),
            (&client_tun, &client_ns, CLIENT_ADDR, SERVER_ADDR),
        ] {
            ip(&["link", "set", &tun.name, "netns", ns.name()])?;
            let (local, peer) = (format!("{local}/32"), format!("{peer}/32"));
            ip(&[
                "-n",
                ns.name(),
                "addr",
                "add",
                &local,
                "peer",
                &peer,
                "dev",
                &tun.name,
            ])?;
            // No IPv6 on the link: its router solicitations and MLD reports
            // would cross the forwarder and blur the byte counts.
            let knob = format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", tun.name);
            if let Ok(Err(e)) = ns.run(|| std::fs::write(&knob, "1")) {
                tracing::debug!("could not disable IPv6 on {}: {e}", tun.name);
            }
            ip(&["-n", ns.name(), "link", "set", &tun.name, "up"])?;
        }
        Ok(LabNet {
            server_tun,
            client_tun,
            server_ns,
            client_ns,
        })
    }
}

/// Deletes lab namespaces left by processes that no longer exist (a run
/// killed with SIGKILL cannot clean up after itself).
pub fn sweep_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", name]);
        }
    }
}
